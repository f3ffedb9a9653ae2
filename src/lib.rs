pub mod cli;
pub mod error;
pub mod layout;
pub mod master;
pub mod model;
pub mod shutdown;
pub mod zk;
