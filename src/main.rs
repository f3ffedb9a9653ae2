//! The `zkmw` binary: parse the command line, run one role, exit with its
//! code. Everything else lives in the library.

use clap::error::ErrorKind;
use zkmw::cli::Command;
use zkmw::error::EXIT_ZKMW_FAILED;

fn main() {
    let parsed = match zkmw::cli::parse_from(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            let _ = err.print();
            std::process::exit(0);
        }
        Err(err) => {
            eprintln!("zkmw: {}", zkmw::cli::usage_error(&err));
            std::process::exit(EXIT_ZKMW_FAILED);
        }
    };
    // Services log their life at info; commands stay quiet unless asked.
    let default_level = match parsed.cli.command {
        Command::Master(_) | Command::Worker(_) => "info",
        _ => "warn",
    };
    // Millisecond timestamps: a task crosses several processes in a few ms.
    zkmw::obs::log::init(parsed.cli.global.log_format, default_level);
    std::process::exit(zkmw::app::run(&parsed));
}
