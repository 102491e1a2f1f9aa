//! Reports in a real browser: headless Chromium loads a report and the
//! `serve` index, runs their scripts, and we assert on the rendered DOM
//! (verdict, cycle drawing, timeline drawn, no script errors). Screenshots
//! go to the run directories. Skipped with a message where Chromium is not
//! installed (`.ci/run` installs Debian's `chromium`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use splitbrain::controller::check_all;
use splitbrain::report::render_run;
use splitbrain::run_store::{create_run_dir, write_json, HISTORY_FILE, RESULTS_FILE, TEST_FILE};
use splitbrain_history::{Format, History, OpWriter};
use splitbrain_workloads::CheckerUse;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|_| PathBuf::from(b))
        })
}

/// The DOM after scripts ran, and the console's error lines.
fn load(browser: &Path, url: &str, screenshot: &Path) -> (String, Vec<String>) {
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1200,1600",
        "--virtual-time-budget=5000",
    ];
    let dom = Command::new(browser)
        .args(common)
        .args(["--enable-logging=stderr", "--v=0", "--dump-dom", url])
        .output()
        .expect("run chromium");
    let log = String::from_utf8_lossy(&dom.stderr).into_owned();
    let errors = log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("Error")))
        .map(str::to_string)
        .collect();
    let shot = Command::new(browser)
        .args(common)
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(url)
        .output()
        .expect("screenshot");
    assert!(
        shot.status.success(),
        "screenshot: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    (String::from_utf8_lossy(&dom.stdout).into_owned(), errors)
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// A stored run made from a recorded history and the checkers named.
fn stored_run(store: &Path, name: &str, history: &Path, checkers: Vec<CheckerUse>) -> PathBuf {
    let dir = create_run_dir(store, name, SystemTime::now()).unwrap();
    let h = History::read(history, None).unwrap();
    let mut w = OpWriter::new(
        std::fs::File::create(dir.join(HISTORY_FILE)).unwrap(),
        Format::Jsonl,
    );
    for op in &h.ops {
        w.write(op).unwrap();
    }
    drop(w);
    // test.json is read typed: the workload the checkers belong to.
    let workload = match checkers.first().map(|c| c.name) {
        Some("set") => "set",
        Some("list-append") => "list-append",
        _ => "register",
    };
    write_json(&dir.join(TEST_FILE), &serde_json::json!({ "name": name, "workload": workload, "seed": 0, "command": format!("splitbrain check {}", history.display()) })).unwrap();
    write_json(
        &dir.join(RESULTS_FILE),
        &check_all(&h, &checkers, Some(Duration::from_secs(30))),
    )
    .unwrap();
    dir
}

fn uses(
    name: &'static str,
    model: Option<&'static str>,
    params: Vec<(&'static str, String)>,
) -> Vec<CheckerUse> {
    vec![CheckerUse {
        name,
        model,
        params,
    }]
}

#[test]
fn reports_render_in_a_browser() {
    let store = tempfile::tempdir().unwrap();
    let valid = stored_run(
        store.path(),
        "set-valid",
        &example("set-valid.edn"),
        uses("set", None, vec![]),
    );
    let lin = stored_run(
        store.path(),
        "cas-register-bad",
        &example("cas-register-bad.edn"),
        uses(
            "linearizable",
            Some("cas-register"),
            vec![("initial", "0".into())],
        ),
    );
    let elle = stored_run(
        store.path(),
        "list-append-g1c",
        &example("list-append-g1c.edn"),
        uses("list-append", None, vec![]),
    );

    // The HTML itself, browser or not.
    let mut pages = Vec::new();
    for (dir, verdict, must) in [
        (&valid, "valid", vec!["set"]),
        (
            &lin,
            "invalid",
            vec!["linearizable", "cannot be linearized"],
        ),
        (
            &elle,
            "invalid",
            vec!["G1c", "class=\"cycle\"", "class=\"edge\""],
        ),
    ] {
        let page = render_run(dir).unwrap();
        let html = std::fs::read_to_string(&page).unwrap();
        assert!(
            html.contains(&format!("class=\"verdict {verdict}\" id=\"verdict\"")),
            "{}: verdict {verdict}",
            dir.display()
        );
        for m in must {
            assert!(html.contains(m), "{}: missing {m}", dir.display());
        }
        for svg in html.split("<svg").skip(1) {
            assert!(
                svg.contains("</svg>"),
                "an unclosed svg element in {}",
                dir.display()
            );
        }
        pages.push(page);
    }

    let Some(browser) = chromium() else {
        eprintln!("SKIPPED: the browser half of reports_render_in_a_browser: no chromium (apt-get install chromium)");
        return;
    };
    for page in &pages {
        let shot = page.with_file_name("report.png");
        let (dom, errors) = load(&browser, &format!("file://{}", page.display()), &shot);
        assert!(
            errors.is_empty(),
            "script errors in {}: {errors:?}",
            page.display()
        );
        assert!(dom.contains("id=\"verdict\""), "verdict shown");
        let drawn: usize = dom
            .split("data-drawn=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(drawn > 0, "the timeline drew ops in {}", page.display());
        assert!(
            std::fs::metadata(&shot)
                .map(|m| m.len() > 10_000)
                .unwrap_or(false),
            "screenshot saved"
        );
    }
    assert!(std::fs::read_to_string(&pages[2])
        .unwrap()
        .contains("class=\"cycle\""));

    // The index, served.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let root = store.path().to_path_buf();
    rt.spawn(async move { splitbrain::serve::serve(root, listener).await });
    let shot = store.path().join("index.png");
    let (dom, errors) = load(&browser, &format!("http://{addr}/"), &shot);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        dom.matches("class=\"run\"").count(),
        3,
        "every run is listed"
    );
    assert!(dom.contains("verdict invalid") && dom.contains("verdict valid"));
    let (report_dom, errors) = load(
        &browser,
        &format!("http://{addr}/list-append-g1c/latest/report.html"),
        &store.path().join("served.png"),
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(report_dom.contains("G1c"));

    // A 100,000-op run: the page loads without script errors and each frame
    // of zooming its timeline draws quickly (measured in the page itself).
    let big_history = store.path().join("big.jsonl");
    write_big_history(&big_history, 50_000);
    let big = stored_run(
        store.path(),
        "big",
        &big_history,
        vec![CheckerUse {
            name: "stats",
            model: None,
            params: vec![],
        }],
    );
    let page = render_run(&big).unwrap();
    let size = std::fs::metadata(&page).unwrap().len();
    assert!(size < 20_000_000, "a 100k-op report is {size} bytes");
    let (dom, errors) = load(
        &browser,
        &format!("file://{}#measure", page.display()),
        &big.join("report.png"),
    );
    assert!(errors.is_empty(), "{errors:?}");
    let attr = |name: &str| -> f64 {
        dom.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the 100k-op page"))
    };
    let (first, worst) = (attr("data-first-draw-ms"), attr("data-worst-frame-ms"));
    let (zoomed, total) = (attr("data-zoomed-drawn"), attr("data-total"));
    // Frame times are figures to read, not to assert (they depend on the
    // machine's load); what keeps the page responsive is that a zoomed frame
    // draws only what is in view.
    eprintln!(
        "100k-op report: {size} bytes; first timeline draw {first} ms, worst zoom frame {worst} ms; zoomed in, {zoomed} of {total} ops drawn"
    );
    // The timeline draws one bar per invocation and its completion.
    assert_eq!(total, 50_000.0);
    assert!(
        zoomed > 0.0 && zoomed < total / 10.0,
        "a zoomed frame drew {zoomed} of {total} ops"
    );
}

/// `invocations` register ops over 20 processes, back to back, completed.
fn write_big_history(path: &Path, invocations: usize) {
    use splitbrain_history::{Op, OpType, Process, Value};
    let mut w = OpWriter::new(
        std::io::BufWriter::new(std::fs::File::create(path).unwrap()),
        Format::Jsonl,
    );
    let mut t = 0i64;
    let mut index = 0u64;
    for i in 0..invocations {
        let f = ["read", "write", "cas"][i % 3];
        let mut inv = Op::new(
            Process::Client((i % 20) as u64),
            OpType::Invoke,
            f,
            Value::Int((i % 5) as i64),
        );
        inv.key = Some(Value::Int((i % 1000) as i64));
        inv.time = Some(t);
        inv.index = index;
        let mut done = inv.clone();
        done.kind = if i % 50 == 0 {
            OpType::Fail
        } else {
            OpType::Ok
        };
        done.time = Some(t + 900_000);
        done.index = index + 1;
        w.write(&inv).unwrap();
        w.write(&done).unwrap();
        t += 50_000;
        index += 2;
    }
    w.flush().unwrap();
}
