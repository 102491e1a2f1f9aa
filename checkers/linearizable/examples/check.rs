//! Check one history file from the command line, until the CLI wires the checker in:
//! `cargo run --release -p splitbrain-linearizable --example check -- MODEL FILE [INITIAL] [--json]`

use splitbrain_history::{Budget, CheckOptions, CheckOutcome, History, Value};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let args: Vec<&String> = args.iter().filter(|a| *a != "--json").collect();
    let [model, file, rest @ ..] = &args[..] else {
        eprintln!("usage: check MODEL FILE [INITIAL] [--json]");
        std::process::exit(255);
    };
    let history = History::read(std::path::Path::new(file.as_str()), None).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(254);
    });
    let opts = CheckOptions {
        model: Some(model.to_string()),
        initial: rest
            .first()
            .map(|v| Value::from_edn(v).expect("an EDN initial value")),
        budget: Budget::with_timeout(Some(std::time::Duration::from_secs(60))),
        ..CheckOptions::default()
    };
    match splitbrain_linearizable::check(&history, &opts) {
        Ok(result) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&result).expect("serializable")
                );
            } else {
                print!("{}", result.explain());
            }
            std::process::exit(result.verdict().exit_code());
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(254);
        }
    }
}
