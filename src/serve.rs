//! `splitbrain serve`: an index of every stored run, newest first, and each
//! run's report and files. Plain HTTP/1.1 GET on a local port.

use std::path::{Component, Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::report::{self, svg::esc, REPORT_FILE};
use crate::run_store::{list_runs, RunSummary};

/// The index page.
pub fn index_html(store: &Path, runs: &[RunSummary]) -> String {
    let mut rows = String::new();
    for r in runs {
        let href = format!("{}/{}/{}", r.test_name, r.run, REPORT_FILE);
        let class = report::verdict_class(r.verdict);
        rows.push_str(&format!(
            "<tr class=\"run\"><td><a href=\"/{}\">{}</a></td><td>{}</td><td><span class=\"verdict {class}\">{class}</span></td><td>{}</td><td>{}</td></tr>\n",
            esc(&href),
            esc(&r.test_name),
            esc(&r.run),
            r.anomaly_types.iter().map(|a| esc(a)).collect::<Vec<_>>().join(", "),
            r.duration_s.map_or("-".to_string(), |d| format!("{d:.1} s")),
        ));
    }
    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>splitbrain runs</title><style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 0 auto; padding: 1em; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ padding: 0.3em 0.8em; border-bottom: 1px solid #eee; text-align: left; }}
.verdict {{ padding: 0.1em 0.5em; border-radius: 5px; color: #fff; font-weight: bold; }}
.valid {{ background: #16a34a; }} .invalid {{ background: #dc2626; }} .unknown {{ background: #d97706; }} .unchecked {{ background: #6b7280; }}
</style></head><body><h1>splitbrain runs</h1><p>{} runs in {}</p>
<table id="runs"><tr><th>test</th><th>started (UTC)</th><th>verdict</th><th>anomalies</th><th>duration</th></tr>
{rows}</table></body></html>"#,
        runs.len(),
        esc(&store.display().to_string())
    )
}

/// Map a request path to a file under the store, refusing anything that climbs out.
fn resolve(store: &Path, url_path: &str) -> Option<PathBuf> {
    let path = url_path.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path)?;
    let rel = Path::new(decoded.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(store.join(rel))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "text/plain; charset=utf-8",
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

async fn handle(store: PathBuf, mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    // Read the request head; we only need its first line.
    while len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    if method != "GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"only GET",
        )
        .await;
    }
    if path == "/" || path == "/index.html" {
        let runs = list_runs(&store).unwrap_or_default();
        return respond(
            &mut stream,
            "200 OK",
            "text/html; charset=utf-8",
            index_html(&store, &runs).as_bytes(),
        )
        .await;
    }
    let Some(file) = resolve(&store, path) else {
        return respond(&mut stream, "400 Bad Request", "text/plain", b"bad path").await;
    };
    // A run without a report gets one on first view.
    if file.file_name().is_some_and(|n| n == REPORT_FILE) && !file.exists() {
        if let Some(dir) = file.parent() {
            let dir = dir.to_path_buf();
            let _ = tokio::task::spawn_blocking(move || report::render_run(&dir)).await;
        }
    }
    match tokio::fs::read(&file).await {
        Ok(body) => respond(&mut stream, "200 OK", content_type(&file), &body).await,
        Err(_) => respond(&mut stream, "404 Not Found", "text/plain", b"not found").await,
    }
}

/// Serve until the process is stopped.
pub async fn serve(store: PathBuf, listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let store = store.clone();
        tokio::spawn(async move {
            let _ = handle(store, stream).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_store() {
        let store = Path::new("/s");
        assert_eq!(
            resolve(store, "/t/r/report.html"),
            Some(PathBuf::from("/s/t/r/report.html"))
        );
        assert_eq!(
            resolve(store, "/t/r/a%20b.log?x=1"),
            Some(PathBuf::from("/s/t/r/a b.log"))
        );
        assert_eq!(resolve(store, "/../etc/passwd"), None);
        assert_eq!(resolve(store, "/t/%2e%2e/%2e%2e/etc"), None);
    }
}
