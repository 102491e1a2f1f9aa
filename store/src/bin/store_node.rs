//! `splitbrain-store-node --config CLUSTER.toml --id n1`: runs one store node.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = None;
    let mut id = None;
    let mut i = 0;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--config", Some(v)) => config = Some(PathBuf::from(v)),
            ("--id", Some(v)) => id = Some(v.clone()),
            _ => {
                eprintln!("usage: splitbrain-store-node --config CLUSTER.toml --id NODE");
                return ExitCode::from(2);
            }
        }
        i += 2;
    }
    let (Some(config), Some(id)) = (config, id) else {
        eprintln!("usage: splitbrain-store-node --config CLUSTER.toml --id NODE");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(splitbrain_store::node::run_node(&config, &id)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("store node {id}: {e}");
            ExitCode::FAILURE
        }
    }
}
