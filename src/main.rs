//! The `wsgo` command: parse the flags, run the server.

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = wsgo::cli::parse();
    wsgo::server::run(config)
}
