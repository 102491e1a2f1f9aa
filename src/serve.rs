//! `splitbrain serve`: an index of every stored run, newest first, and each
//! run's report and files. Plain HTTP/1.1 GET on a local port.

use std::path::{Component, Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

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
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    stream.flush().await
}

/// What `serve` allows its clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A client must send its request head within this.
    pub head_timeout: Duration,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Writing a response must finish within this.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_timeout: Duration::from_secs(10),
            max_connections: 256,
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// The request head: its method and path, once it has arrived whole (or the
/// 8 KiB buffer is full).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<(String, String)> {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
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
    Ok((
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("/").to_string(),
    ))
}

/// The file a request names, if it really lies under the store: links
/// inside the store (the `latest` links) are followed, links out of it are not.
fn confined(store: &Path, file: &Path) -> Option<PathBuf> {
    let root = std::fs::canonicalize(store).ok()?;
    let real = match std::fs::canonicalize(file) {
        Ok(real) => real,
        // Not there yet (a report made on first view): its directory must be.
        Err(_) => std::fs::canonicalize(file.parent()?)
            .ok()?
            .join(file.file_name()?),
    };
    real.starts_with(&root).then_some(real)
}

async fn handle(store: PathBuf, mut stream: TcpStream, limits: Limits) -> std::io::Result<()> {
    let (method, path) =
        match tokio::time::timeout(limits.head_timeout, read_head(&mut stream)).await {
            Ok(head) => head?,
            Err(_) => {
                return respond(
                    &mut stream,
                    "408 Request Timeout",
                    "text/plain",
                    b"request head too slow",
                    false,
                )
                .await;
            }
        };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"only GET and HEAD",
            false,
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
            head_only,
        )
        .await;
    }
    let file = match resolve(&store, &path) {
        None => Err(("400 Bad Request", &b"bad path"[..])),
        Some(file) => confined(&store, &file).ok_or(("404 Not Found", &b"not found"[..])),
    };
    let file = match file {
        Ok(file) => file,
        Err((status, body)) => {
            return respond(&mut stream, status, "text/plain", body, head_only).await;
        }
    };
    // A run without a report gets one on first view.
    if file.file_name().is_some_and(|n| n == REPORT_FILE) && !file.exists() {
        if let Some(dir) = file.parent() {
            let dir = dir.to_path_buf();
            let _ = tokio::task::spawn_blocking(move || report::render_run(&dir)).await;
        }
    }
    let is_file = tokio::fs::metadata(&file).await.is_ok_and(|m| m.is_file());
    let body = if is_file {
        tokio::fs::read(&file).await.ok()
    } else {
        None
    };
    match body {
        Some(body) => respond(&mut stream, "200 OK", content_type(&file), &body, head_only).await,
        None => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                b"not found",
                head_only,
            )
            .await
        }
    }
}

/// Serve until the process is stopped, with the default [`Limits`].
pub async fn serve(store: PathBuf, listener: TcpListener) -> std::io::Result<()> {
    serve_with(store, listener, Limits::default()).await
}

/// Serve until the process is stopped; a failed accept is retried.
pub async fn serve_with(
    store: PathBuf,
    listener: TcpListener,
    limits: Limits,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let mut stream = splitbrain_store::node::accept_next(&listener, "report").await;
        let store = store.clone();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                // Reading the request first lets the close be a clean one
                // (unread data would reset the connection under the reply).
                let busy = async {
                    read_head(&mut stream).await?;
                    respond(
                        &mut stream,
                        "503 Service Unavailable",
                        "text/plain",
                        b"too many connections",
                        false,
                    )
                    .await
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), busy).await;
            });
            continue;
        };
        tokio::spawn(async move {
            let _slot = slot;
            let served = tokio::time::timeout(
                limits.head_timeout + limits.write_timeout,
                handle(store, stream, limits),
            );
            let _ = served.await;
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
