//! Histories as other tools write them are read as they are: a JSON array of
//! op objects (elle-cli), EDN with `;` comments, ops without `:f` (a txn)
//! and without `:process` (each op its own process), completion-only files.

use splitbrain_history::{Format, History, OpType, Process};

fn read(name: &str, text: &str) -> History {
    let dir = std::env::temp_dir().join(format!("sb-formats-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let h = History::read(&path, None).unwrap_or_else(|e| panic!("{name}: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    h
}

#[test]
fn json_array_of_ops_without_f() {
    let h = read(
        "h.json",
        r#"[{"index":0,"process":0,"type":"invoke","value":[["append",1,1]]},
 {"index":1,"process":0,"type":"ok","value":[["append",1,1]]},
 {"index":2,"process":1,"type":"invoke","f":null,"value":[["r",1,null]]},
 {"index":3,"process":1,"type":"ok","f":null,"value":[["r",1,[1]]]}]
"#,
    );
    assert_eq!(h.len(), 4);
    assert!(h.ops.iter().all(|o| o.f.as_str() == "txn"));
    assert_eq!(h.completion(0), Some(1));
    assert_eq!(h.ops[3].value.as_list().map(|l| l.len()), Some(1));
    assert_eq!(Format::detect(b"[{\"index\":0}]"), Some(Format::Jsonl));
    assert_eq!(Format::detect(b"[\n  {\"index\":0}]"), Some(Format::Jsonl));
    assert_eq!(Format::detect(b"[{:index 0}]"), Some(Format::Edn));
    assert_eq!(Format::detect(b"; comment\n[]"), Some(Format::Jsonl));
}

#[test]
fn a_bad_op_in_a_json_array_names_its_line() {
    let dir = std::env::temp_dir().join(format!("sb-formats-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.json");
    std::fs::write(
        &path,
        "[{\"process\":0,\"type\":\"invoke\",\"value\":1},\n {\"process\":0,\"type\":\"bogus\"}]\n",
    )
    .unwrap();
    let e = History::read(&path, None).unwrap_err().to_string();
    assert!(e.contains(":2") || e.contains("line 2"), "{e}");
    std::fs::write(&path, "[{\"process\":0,\"type\":\"invoke\",\"value\":1}").unwrap();
    let e = History::read(&path, None).unwrap_err().to_string();
    assert!(e.contains("never closed"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn edn_with_comments_and_completion_only_ops_without_process() {
    let h = read(
        "c.edn",
        "; Elle's histories may open with comments.\n\
         ; And their ops may name no process.\n\
         {:index 1, :type :ok, :value [[:append :x 1] [:r :y []]]}\n\
         {:index 2, :type :ok, :value [[:append :y 1] [:r :x []]]}\n",
    );
    // Each completion got an invocation, each op a process of its own.
    assert_eq!(h.len(), 4);
    let invokes: Vec<_> = h.ops.iter().filter(|o| o.kind == OpType::Invoke).collect();
    assert_eq!(invokes.len(), 2);
    assert_ne!(h.ops[2].process, h.ops[3].process);
    assert!(h.ops.iter().all(|o| o.f.as_str() == "txn"));
    // No real-time order is claimed between ops of different processes:
    // both invocations come before either completion.
    assert!(h.ops[..2].iter().all(|o| o.kind == OpType::Invoke));
}

#[test]
fn completion_only_ops_keep_their_process_order() {
    let h = read(
        "p.edn",
        "{:process 0, :type :ok, :f :txn, :value [[:append 1 1]]}\n\
         {:process 1, :type :ok, :f :txn, :value [[:r 1 [1]]]}\n\
         {:process 0, :type :ok, :f :txn, :value [[:append 1 2]]}\n",
    );
    assert_eq!(h.len(), 6);
    // Process 0's second op is invoked after its first completes.
    let kinds: Vec<(Process, OpType)> = h.ops.iter().map(|o| (o.process.clone(), o.kind)).collect();
    let first_done = kinds
        .iter()
        .position(|k| *k == (Process::Client(0), OpType::Ok))
        .unwrap();
    let second_invoked = kinds
        .iter()
        .rposition(|k| *k == (Process::Client(0), OpType::Invoke))
        .unwrap();
    assert!(first_done < second_invoked, "{kinds:?}");
}

#[test]
fn byte_order_marks_long_lines_and_bad_utf8() {
    let dir = std::env::temp_dir().join(format!("sb-formats-bytes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A UTF-8 byte order mark is skipped.
    let bom = dir.join("bom.edn");
    std::fs::write(
        &bom,
        b"\xEF\xBB\xBF{:process 0 :type :invoke :f :read :value nil}\n{:process 0 :type :ok :f :read :value 1}\n",
    )
    .unwrap();
    assert_eq!(History::read(&bom, None).unwrap().len(), 2);
    // Invalid UTF-8 names its line.
    let bad = dir.join("bad.edn");
    std::fs::write(
        &bad,
        b"{:process 0 :type :invoke :f :read :value nil}\n{:process 0 :type :ok :f :read :value \"\xFF\"}\n",
    )
    .unwrap();
    let e = History::read(&bad, None).unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.problem.contains("UTF-8"), "{e}");
    // A JSON Lines op longer than the reader's chunk (4 MiB) is read whole.
    let long = dir.join("long.jsonl");
    let big: Vec<String> = (0..900_000).map(|i| i.to_string()).collect();
    let text = format!(
        "{{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}}\n{{\"process\":0,\"type\":\"ok\",\"f\":\"read\",\"value\":[{}]}}\n",
        big.join(",")
    );
    assert!(text.len() > 5 << 20);
    std::fs::write(&long, text).unwrap();
    let h = History::read(&long, None).unwrap();
    assert_eq!(h.ops[1].value.as_list().map(|l| l.len()), Some(900_000));
    let _ = std::fs::remove_dir_all(&dir);
}
