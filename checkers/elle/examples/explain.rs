//! Print the checker's explanation for a shorthand history, e.g.
//! `cargo run -p splitbrain-elle --example explain -- "r1:nil a2:1 | r2:nil a1:1" "r1:[1] r2:[1]"`.
//! With no arguments it shows a read-skew example.

use splitbrain_elle::{check_list_append, shorthand};
use splitbrain_history::{CheckOptions, CheckOutcome};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: Vec<&str> = if args.is_empty() {
        vec!["r1:nil r2:[1] | a1:1 a2:1", "r1:[1]"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    let history = match shorthand::ops(&rounds).map(splitbrain_history::History::from_ops) {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return eprintln!("{e}"),
        Err(e) => return eprintln!("{e}"),
    };
    match check_list_append(&history, &CheckOptions::default()) {
        Ok(r) => {
            println!("{}", r.explain());
            for c in &r.cycles {
                println!("{}", splitbrain_elle::cycle_dot(c));
            }
        }
        Err(e) => eprintln!("{e}"),
    }
}
