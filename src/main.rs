//! The `splitbrain` command: check stored histories, convert between formats,
//! run tests, serve reports and host store nodes.

mod cli;

use std::process::ExitCode;

// Big histories are millions of small values: mimalloc packs them tighter
// than glibc's malloc and returns what parallel parsing freed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes, the same as Jepsen's so existing CI gates keep working.
pub mod exit {
    pub const VALID: u8 = 0;
    pub const INVALID: u8 = 1;
    pub const UNKNOWN: u8 = 2;
    pub const BAD_INPUT: u8 = 254;
    pub const INTERNAL: u8 = 255;
}

fn main() -> ExitCode {
    // A bug of ours is exit 255, never a verdict. Panics inside one checker
    // are caught where it runs (the others go on); one that reaches here ends the run.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("splitbrain: internal error: {info}");
    }));
    std::panic::catch_unwind(cli::main).unwrap_or(ExitCode::from(exit::INTERNAL))
}
