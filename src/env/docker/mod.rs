//! The Docker environment: one network and one container per node, created,
//! controlled and removed through the Docker API. Everything made here is
//! labelled with the run and the PID of the harness that made it, so a later
//! run removes what an interrupted or crashed one left behind.

pub mod image;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig,
    NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use splitbrain_nemesis::shape::{cut_links, Grudge, Node};
use splitbrain_nemesis::{Ability, Target};
use tokio::io::AsyncWriteExt;

pub const LABEL_MANAGED: &str = "splitbrain.managed";
pub const LABEL_RUN: &str = "splitbrain.run";
pub const LABEL_PID: &str = "splitbrain.pid";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine: {0}")]
    Connect(String),
    #[error("Docker API: {0}")]
    Api(#[from] bollard::errors::Error),
    #[error("no node named {0}")]
    UnknownNode(String),
    #[error("`{cmd}` in {node} exited with {code}: {output}")]
    Exec {
        node: String,
        cmd: String,
        code: i64,
        output: String,
    },
    #[error("the fault did not take effect: {0}")]
    NotInEffect(String),
    #[error("no Debian mirror to build images from: this machine's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/) name no Debian archive; give one with `splitbrain image build --mirror URL`")]
    NoMirror,
    #[error("--mirror {0}: expected an http://, https:// or file:/ URL of a Debian archive")]
    BadMirror(String),
    #[error("{0}")]
    Other(String),
}

/// Connect to the local engine, speaking the API version it speaks.
pub async fn connect() -> Result<Docker, DockerError> {
    let d =
        Docker::connect_with_local_defaults().map_err(|e| DockerError::Connect(e.to_string()))?;
    d.negotiate_version()
        .await
        .map_err(|e| DockerError::Connect(e.to_string()))
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only asks whether the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

pub(crate) fn labels(run: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_RUN.to_string(), run.to_string()),
        (LABEL_PID.to_string(), std::process::id().to_string()),
    ])
}

/// Remove containers and networks that earlier runs made and whose harness
/// process is gone, but none of the runs in `kept` (left running on
/// purpose). Returns how many things were removed.
pub async fn remove_leftovers(docker: &Docker, kept: &[String]) -> Result<usize, DockerError> {
    remove_labelled(docker, LABEL_MANAGED, |labels| {
        let Some(labels) = labels.as_ref() else {
            return true;
        };
        let kept = labels.get(LABEL_RUN).is_some_and(|r| kept.contains(r));
        !kept
            && labels
                .get(LABEL_PID)
                .and_then(|p| p.parse::<u32>().ok())
                .is_none_or(|p| !pid_alive(p))
    })
    .await
}

/// Remove every container and network labelled with `run`, whoever made
/// them: the last word of a teardown, which also catches what a setup that
/// was interrupted half-way had made but not yet recorded.
pub async fn remove_run(docker: &Docker, run: &str) -> Result<usize, DockerError> {
    remove_labelled(docker, &format!("{LABEL_RUN}={run}"), |_| true).await
}

/// Remove the containers, then the networks, that carry `label` and that
/// `remove` picks by their labels; returns how many were removed.
async fn remove_labelled(
    docker: &Docker,
    label: &str,
    remove: impl Fn(&Option<HashMap<String, String>>) -> bool,
) -> Result<usize, DockerError> {
    let filters = HashMap::from([("label", vec![label])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await?;
    let mut removed = 0;
    for id in containers
        .into_iter()
        .filter(|c| remove(&c.labels))
        .filter_map(|c| c.id)
    {
        docker
            .remove_container(
                &id,
                Some(
                    RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
            .await?;
        removed += 1;
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await?;
    for id in networks
        .into_iter()
        .filter(|n| remove(&n.labels))
        .filter_map(|n| n.id)
    {
        docker.remove_network(&id).await?;
        removed += 1;
    }
    Ok(removed)
}

/// Everything the run made that is still there (for tests and `--check-clean`).
pub async fn managed_by_run(docker: &Docker, run: &str) -> Result<usize, DockerError> {
    let label = format!("{LABEL_RUN}={run}");
    let filters = HashMap::from([("label", vec![label.as_str()])]);
    let c = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await?;
    let n = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await?;
    Ok(c.len() + n.len())
}

/// What goes into a container: a file's bytes, or a file on this host
/// (streamed, so a big binary is never held in memory).
pub enum FileSource {
    Bytes(Vec<u8>),
    Host(PathBuf),
}

/// Copy files into a container through the API: one tar archive unpacked
/// at `/`. `files` are (absolute path in the container, contents, mode);
/// the engine makes missing parent directories.
pub async fn copy_in(
    docker: &Docker,
    container: &str,
    files: Vec<(String, FileSource, u32)>,
) -> Result<(), DockerError> {
    let archive = tempfile_path("copy-in", "tar");
    let path = archive.clone();
    tokio::task::spawn_blocking(move || write_tar(&path, &files))
        .await
        .map_err(|e| DockerError::Other(format!("the archive task failed: {e}")))??;
    let result = async {
        let body = file_body(&archive).await?;
        docker
            .upload_to_container(
                container,
                Some(UploadToContainerOptionsBuilder::new().path("/").build()),
                bollard::body_stream(body),
            )
            .await
            .map_err(DockerError::from)
    }
    .await;
    let _ = std::fs::remove_file(&archive);
    result
}

/// A file on this host as a request body's chunks, streamed in 1 MiB chunks (image
/// imports and copies can be hundreds of megabytes).
pub(crate) async fn file_body(
    path: &Path,
) -> Result<impl futures_util::Stream<Item = tokio_util::bytes::Bytes> + Send + 'static, DockerError>
{
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| DockerError::Other(format!("cannot open {}: {e}", path.display())))?;
    let chunks = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
        .filter_map(|chunk| async move { chunk.ok() });
    Ok(chunks)
}

/// Copy one file out of a container through the API.
pub async fn copy_out(
    docker: &Docker,
    container: &str,
    path: &str,
) -> Result<Vec<u8>, DockerError> {
    let mut stream = docker.download_from_container(
        container,
        Some(
            DownloadFromContainerOptionsBuilder::new()
                .path(path)
                .build(),
        ),
    );
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        archive.extend_from_slice(&chunk?);
    }
    let mut entries = tar::Archive::new(archive.as_slice());
    let bad =
        |e: std::io::Error| DockerError::Other(format!("reading {path} from {container}: {e}"));
    for entry in entries.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if entry.header().entry_type().is_file() {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut out).map_err(bad)?;
            return Ok(out);
        }
    }
    Err(DockerError::Other(format!(
        "{path} in {container} is not a file"
    )))
}

fn tempfile_path(what: &str, ext: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "splitbrain-{what}-{}-{n}.{ext}",
        std::process::id()
    ))
}

fn write_tar(path: &Path, files: &[(String, FileSource, u32)]) -> Result<(), DockerError> {
    let io = |e: std::io::Error| DockerError::Other(format!("writing {}: {e}", path.display()));
    let out = std::fs::File::create(path).map_err(io)?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(out));
    for (dest, source, mode) in files {
        let rel = dest.trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "..") {
            return Err(DockerError::Other(format!(
                "cannot copy to {dest:?}: expected an absolute file path"
            )));
        }
        // No directory entries: the engine makes missing parents (0755), and
        // an entry for an existing one (/tmp, say) would reset its mode.
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(*mode);
        match source {
            FileSource::Bytes(b) => {
                h.set_size(b.len() as u64);
                tar.append_data(&mut h, rel, b.as_slice()).map_err(io)?;
            }
            FileSource::Host(p) => {
                let f = std::fs::File::open(p)
                    .map_err(|e| DockerError::Other(format!("cannot open {}: {e}", p.display())))?;
                let len = f.metadata().map_err(io)?.len();
                h.set_size(len);
                tar.append_data(&mut h, rel, f).map_err(io)?;
            }
        }
    }
    tar.into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(io)
}

/// How to start one node's container.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: Node,
    pub image: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
}

/// A cluster of containers on a network of its own.
pub struct DockerCluster {
    docker: Docker,
    run: String,
    network: String,
    nodes: Vec<Node>,
    containers: BTreeMap<Node, String>,
    ips: BTreeMap<Node, Ipv4Addr>,
    log_dir: PathBuf,
    log_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Killed or paused nodes: nothing can be run in them, and a heal that
    /// comes while one is down (the final heal after a time limit cut a
    /// fault short) leaves them out.
    down: BTreeSet<Node>,
    /// The partition in force, which stopping packet loss leaves in place.
    grudge: Option<Grudge>,
}

/// Create a labelled bridge network with a /24 of its own, so that nodes can
/// have fixed addresses. Docker refuses a subnet that overlaps another
/// network's, so a few candidates are tried. Returns the subnet's first three octets.
async fn create_network(docker: &Docker, run: &str, network: &str) -> Result<[u8; 3], DockerError> {
    let seed = std::process::id() as usize
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as usize);
    let mut last = None;
    for attempt in 0..24usize {
        let pick = seed.wrapping_add(attempt.wrapping_mul(7919));
        // 172.24.0.0/13 minus the ranges Docker hands out first (172.17-23).
        let octets = [172, 24 + (pick / 256 % 8) as u8, (pick % 256) as u8];
        let subnet = format!("{}.{}.{}.0/24", octets[0], octets[1], octets[2]);
        let req = NetworkCreateRequest {
            name: network.to_string(),
            driver: Some("bridge".into()),
            labels: Some(labels(run)),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet),
                    gateway: Some(format!("{}.{}.{}.1", octets[0], octets[1], octets[2])),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        match docker.create_network(req).await {
            Ok(_) => return Ok(octets),
            Err(e) if e.to_string().to_lowercase().contains("overlap") => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(DockerError::Other(format!(
        "no free subnet for the network: {}",
        last.map_or(String::new(), |e| e.to_string())
    )))
}

impl DockerCluster {
    /// Create the network and containers and start them; node logs stream to `log_dir/<node>.log`.
    pub async fn create(
        docker: Docker,
        run: &str,
        specs: &[NodeSpec],
        log_dir: &Path,
    ) -> Result<DockerCluster, DockerError> {
        let names: Vec<Node> = specs.iter().map(|s| s.name.clone()).collect();
        let mut c = Self::place(docker, run, &names, log_dir).await?;
        for s in specs {
            if let Err(e) = c.create_node(s, Vec::new()).await {
                c.destroy().await;
                return Err(e);
            }
        }
        Ok(c)
    }

    /// The network, with a fixed address for every node (kept across
    /// restarts), before any container exists.
    pub async fn place(
        docker: Docker,
        run: &str,
        names: &[Node],
        log_dir: &Path,
    ) -> Result<DockerCluster, DockerError> {
        remove_leftovers(&docker, &super::run_lock::kept_docker_runs()).await?;
        let network = format!("sb-{run}");
        let [a, b, c] = create_network(&docker, run, &network).await?;
        let ips: BTreeMap<Node, Ipv4Addr> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), Ipv4Addr::new(a, b, c, 10 + i as u8)))
            .collect();
        Ok(DockerCluster {
            docker,
            run: run.to_string(),
            network: network.clone(),
            nodes: names.to_vec(),
            containers: BTreeMap::new(),
            ips: ips.clone(),
            log_dir: log_dir.to_path_buf(),
            log_tasks: Vec::new(),
            down: BTreeSet::new(),
            grudge: None,
        })
    }

    /// Every node's fixed address.
    pub fn ips(&self) -> &BTreeMap<Node, Ipv4Addr> {
        &self.ips
    }

    /// Create a node's container, copy `files` into it, and start it.
    pub async fn create_node(
        &mut self,
        s: &NodeSpec,
        files: Vec<(String, FileSource, u32)>,
    ) -> Result<(), DockerError> {
        let name = format!("sb-{}-{}", self.run, s.name);
        let ip = self.ip(&s.name)?;
        let endpoint = EndpointSettings {
            aliases: Some(vec![s.name.clone()]),
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: Some(ip.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(s.image.clone()),
            hostname: Some(s.name.clone()),
            cmd: Some(s.cmd.clone()),
            env: Some(s.env.clone()),
            working_dir: s.working_dir.clone(),
            labels: Some(labels(&self.run)),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone()),
                cap_add: Some(vec!["NET_ADMIN".into()]),
                init: Some(true),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(self.network.clone(), endpoint)])),
            }),
            ..Default::default()
        };
        self.docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await?;
        self.containers.insert(s.name.clone(), name.clone());
        if !files.is_empty() {
            copy_in(&self.docker, &name, files).await?;
        }
        self.docker.start_container(&name, None).await?;
        let info = self.docker.inspect_container(&name, None).await?;
        let got = info
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.get(&self.network).and_then(|e| e.ip_address.clone()));
        if got.as_deref() != Some(ip.to_string().as_str()) {
            return Err(DockerError::Other(format!(
                "{} has address {got:?} on {}, not {ip}",
                s.name, self.network
            )));
        }
        self.follow_logs(&s.name, &name);
        Ok(())
    }

    fn follow_logs(&mut self, node: &str, container: &str) {
        let path = self.log_dir.join(format!("{node}.log"));
        let mut stream = self.docker.logs(
            container,
            Some(
                LogsOptionsBuilder::new()
                    .follow(true)
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        );
        self.log_tasks.push(tokio::spawn(async move {
            let Ok(mut file) = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await
            else {
                return;
            };
            while let Some(Ok(chunk)) = stream.next().await {
                if file.write_all(&chunk.into_bytes()).await.is_err() {
                    break;
                }
            }
            let _ = file.flush().await;
        }));
    }

    pub fn node_names(&self) -> Vec<Node> {
        self.nodes.clone()
    }

    pub fn ip(&self, node: &str) -> Result<Ipv4Addr, DockerError> {
        self.ips
            .get(node)
            .copied()
            .ok_or_else(|| DockerError::UnknownNode(node.to_string()))
    }

    fn container(&self, node: &str) -> Result<&str, DockerError> {
        self.containers
            .get(node)
            .map(String::as_str)
            .ok_or_else(|| DockerError::UnknownNode(node.to_string()))
    }

    /// Run a command in a node's container; its exit code and combined output.
    pub async fn exec(&self, node: &str, cmd: &[&str]) -> Result<(i64, String), DockerError> {
        let container = self.container(node)?;
        let created = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await?;
        let mut output = String::new();
        if let StartExecResults::Attached {
            output: mut out, ..
        } = self
            .docker
            .start_exec(&created.id, Some(StartExecOptions::default()))
            .await?
        {
            while let Some(chunk) = out.next().await {
                output.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
            }
        }
        let code = self
            .docker
            .inspect_exec(&created.id)
            .await?
            .exit_code
            .unwrap_or(-1);
        Ok((code, output))
    }

    /// Run a command that must succeed.
    pub async fn exec_ok(&self, node: &str, cmd: &[&str]) -> Result<String, DockerError> {
        let (code, output) = self.exec(node, cmd).await?;
        if code != 0 {
            return Err(DockerError::Exec {
                node: node.to_string(),
                cmd: cmd.join(" "),
                code,
                output: output.trim().to_string(),
            });
        }
        Ok(output)
    }

    /// Write a file into a node's container (through the API, not a shell).
    pub async fn put_file(
        &self,
        node: &str,
        path: &str,
        contents: &[u8],
        mode: u32,
    ) -> Result<(), DockerError> {
        let container = self.container(node)?;
        copy_in(
            &self.docker,
            container,
            vec![(path.to_string(), FileSource::Bytes(contents.to_vec()), mode)],
        )
        .await
    }

    /// Read a file from a node's container (through the API); works on a
    /// stopped container too, so a killed node's files can still be collected.
    pub async fn get_file(&self, node: &str, path: &str) -> Result<Vec<u8>, DockerError> {
        copy_out(&self.docker, self.container(node)?, path).await
    }

    pub async fn kill_node(&mut self, node: &str) -> Result<(), DockerError> {
        let c = self.container(node)?.to_string();
        let killed = self
            .docker
            .kill_container(
                &c,
                Some(KillContainerOptionsBuilder::new().signal("KILL").build()),
            )
            .await;
        if let Err(e) = killed {
            // A process that ended by itself (an etcd member once removed) is as good as killed.
            let info = self.docker.inspect_container(&c, None).await?;
            if info.state.and_then(|s| s.running).unwrap_or(true) {
                return Err(e.into());
            }
        }
        self.down.insert(node.to_string());
        Ok(())
    }

    pub async fn start_node(&mut self, node: &str) -> Result<(), DockerError> {
        let c = self.container(node)?.to_string();
        self.docker.start_container(&c, None).await?;
        self.down.remove(node);
        // A restarted container's log stream ended with the old process.
        self.follow_logs(node, &c);
        Ok(())
    }

    pub async fn pause_node(&mut self, node: &str) -> Result<(), DockerError> {
        self.docker.pause_container(self.container(node)?).await?;
        self.down.insert(node.to_string());
        Ok(())
    }

    pub async fn unpause_node(&mut self, node: &str) -> Result<(), DockerError> {
        self.docker.unpause_container(self.container(node)?).await?;
        self.down.remove(node);
        Ok(())
    }

    async fn flush_rules(&self) -> Result<(), DockerError> {
        self.set_rules(&BTreeMap::new()).await
    }

    /// Replace every running node's INPUT rules with the ones given for it
    /// (`-s ADDR ... -j DROP` argument lists): one exec per node, all nodes
    /// at once, so a fault takes effect in one round trip.
    async fn set_rules(&self, rules: &BTreeMap<Node, Vec<String>>) -> Result<(), DockerError> {
        let none = Vec::new();
        let jobs = self
            .nodes
            .iter()
            .filter(|n| !self.down.contains(*n))
            .map(|n| {
                let mut script = String::from("iptables -w -F INPUT");
                for r in rules.get(n).unwrap_or(&none) {
                    script.push_str(" && iptables -w -A INPUT ");
                    script.push_str(r);
                }
                async move { self.exec_ok(n, &["sh", "-c", &script]).await }
            });
        for r in futures_util::future::join_all(jobs).await {
            r?;
        }
        Ok(())
    }

    /// Ping every ordered pair; links in `cut` must fail and all others succeed.
    pub async fn verify_links(&self, cut: &BTreeSet<(Node, Node)>) -> Result<(), DockerError> {
        // All pairs at once: a cut link costs a whole ping timeout, and
        // faults should take effect in well under the nemesis interval.
        let up: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| !self.down.contains(*n))
            .collect();
        let probes = up.iter().flat_map(|from| {
            up.iter()
                .filter(move |to| *to != from)
                .map(move |to| async move {
                    let ip = self.ip(to)?.to_string();
                    let (code, _) = self
                        .exec(from, &["ping", "-c", "1", "-W", "1", "-q", &ip])
                        .await?;
                    let up = code == 0;
                    let (from, to) = (*from, *to);
                    let expect_up = !cut.contains(&(from.clone(), to.clone()))
                        && !cut.contains(&(to.clone(), from.clone()));
                    Ok::<_, DockerError>((up != expect_up).then(|| {
                        format!(
                            "{from} -> {to} is {}",
                            if up {
                                "up but should be cut"
                            } else {
                                "cut but should be up"
                            }
                        )
                    }))
                })
        });
        let mut wrong = Vec::new();
        for r in futures_util::future::join_all(probes).await {
            if let Some(w) = r? {
                wrong.push(w);
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(DockerError::NotInEffect(wrong.join("; ")))
        }
    }

    /// Remove every container and the network; stop following logs.
    pub async fn destroy(&mut self) {
        for c in self.containers.values() {
            let _ = self
                .docker
                .remove_container(
                    c,
                    Some(
                        RemoveContainerOptionsBuilder::new()
                            .force(true)
                            .v(true)
                            .build(),
                    ),
                )
                .await;
        }
        self.containers.clear();
        let _ = self.docker.remove_network(&self.network).await;
        for t in self.log_tasks.drain(..) {
            t.abort();
        }
    }
}

/// The file libfaketime reads on every clock call in each container
/// (`FAKETIME_TIMESTAMP_FILE`, with `FAKETIME_NO_CACHE=1`).
pub const FAKETIME_FILE: &str = "/etc/splitbrain-faketime";

/// Environment that makes a container's programs read their clock through libfaketime.
pub fn faketime_env() -> Vec<String> {
    FAKETIME_ENV.iter().map(|s| s.to_string()).collect()
}

/// [`faketime_env`], for a database's [`super::NodeImage`].
pub const FAKETIME_ENV: &[&str] = &[
    "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "FAKETIME_TIMESTAMP_FILE=/etc/splitbrain-faketime",
    "FAKETIME_NO_CACHE=1",
];

#[async_trait]
impl Target for DockerCluster {
    fn lacks(&self, ability: Ability) -> Option<String> {
        match ability {
            Ability::Primaries => {
                Some("containers alone do not know who leads; the database does".into())
            }
            Ability::Membership => Some(crate::env::MEMBERSHIP_IS_THE_DATABASES.into()),
            Ability::Rebalance => Some(crate::env::REBALANCING_IS_THE_DATABASES.into()),
            _ => None,
        }
    }
    fn nodes(&self) -> Vec<Node> {
        self.nodes.clone()
    }
    async fn partition(&mut self, grudge: &Grudge) -> Result<(), String> {
        let mut rules: BTreeMap<Node, Vec<String>> = BTreeMap::new();
        for (to, froms) in grudge {
            for from in froms {
                let src = self.ip(from).map_err(|e| e.to_string())?;
                rules
                    .entry(to.clone())
                    .or_default()
                    .push(format!("-s {src} -j DROP"));
            }
        }
        self.set_rules(&rules).await.map_err(|e| e.to_string())?;
        self.grudge = Some(grudge.clone());
        self.verify_links(&cut_links(grudge))
            .await
            .map_err(|e| e.to_string())
    }
    async fn heal(&mut self) -> Result<(), String> {
        self.grudge = None;
        self.flush_rules().await.map_err(|e| e.to_string())?;
        self.verify_links(&BTreeSet::new())
            .await
            .map_err(|e| e.to_string())
    }
    async fn kill(&mut self, nodes: &[Node]) -> Result<(), String> {
        for n in nodes {
            self.kill_node(n).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    async fn restart(&mut self, nodes: &[Node]) -> Result<(), String> {
        for n in nodes {
            self.start_node(n).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    async fn pause(&mut self, nodes: &[Node]) -> Result<(), String> {
        for n in nodes {
            self.pause_node(n).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    async fn resume(&mut self, nodes: &[Node]) -> Result<(), String> {
        for n in nodes {
            self.unpause_node(n).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    async fn set_clock_offset(&mut self, node: &Node, delta_ms: i64) -> Result<(), String> {
        // libfaketime's relative offsets: "+1.5s", "-120s".
        let spec = format!("{:+}s", delta_ms as f64 / 1000.0);
        let script = format!("printf '%s\\n' '{spec}' > {FAKETIME_FILE}");
        self.exec_ok(node, &["sh", "-c", &script])
            .await
            .map_err(|e| e.to_string())?;
        // Prove it: exec'd programs carry the container's environment, so
        // `date` runs under libfaketime; compare it with our own clock.
        let out = self
            .exec_ok(node, &["date", "+%s"])
            .await
            .map_err(|e| e.to_string())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if let Ok(faked) = out.trim().parse::<i64>() {
            let want = delta_ms / 1000;
            if (faked - now - want).abs() > 2 {
                return Err(format!(
                    "the clock of {node} is off by {}s, not {want}s: is libfaketime preloaded?",
                    faked - now
                ));
            }
        }
        Ok(())
    }
    async fn loss(&mut self, fraction: f64) -> Result<(), String> {
        let p = format!("{:.4}", fraction.clamp(0.0, 1.0));
        let mut rules: BTreeMap<Node, Vec<String>> = BTreeMap::new();
        for n in &self.nodes {
            for from in self.nodes.iter().filter(|m| *m != n) {
                let src = self.ip(from).map_err(|e| e.to_string())?;
                rules.entry(n.clone()).or_default().push(format!(
                    "-s {src} -m statistic --mode random --probability {p} -j DROP"
                ));
            }
        }
        self.set_rules(&rules).await.map_err(|e| e.to_string())
    }
    async fn stop_loss(&mut self) -> Result<(), String> {
        // The rules are replaced as a whole: put back the partition, if any.
        match self.grudge.clone() {
            Some(g) => self.partition(&g).await,
            None => self.heal().await,
        }
    }
}

/// Where this splitbrain binary is in an image made `with_harness`.
pub const HARNESS_PROGRAM: &str = "/opt/splitbrain/splitbrain";
/// Every node's working directory in its container.
pub const NODE_DIR: &str = "/var/lib/splitbrain";

/// The image every node of a run starts from: `--image`, or the recipe's
/// (built when missing), with this binary added when asked.
async fn node_image(
    docker: &Docker,
    image: &super::NodeImage,
    image_override: Option<&str>,
) -> Result<String, super::EnvError> {
    let tag = match image_override {
        Some(tag) => {
            if !image::exists(docker, tag).await {
                return Err(super::EnvError::Other(format!(
                    "--image {tag}: the Docker engine has no such image"
                )));
            }
            tag.to_string()
        }
        None => {
            let recipe = image::Recipe::new(image.recipe, image.packages);
            if !image::exists(docker, &recipe.tag()).await {
                eprintln!(
                    "building image {} (debootstrap; takes minutes the first time)",
                    recipe.tag()
                );
            }
            image::ensure(docker, &recipe, Path::new(image::WORK_DIR), false)
                .await?
                .0
        }
    };
    if !image.with_harness {
        return Ok(tag);
    }
    let program = std::env::current_exe()?;
    let name = format!("{}-harness", image.recipe);
    let (derived, made) = image::derive(
        docker,
        &tag,
        &name,
        &[(program, HARNESS_PROGRAM.to_string())],
    )
    .await?;
    if made {
        eprintln!("made image {derived}: {tag} with this splitbrain binary added");
    }
    Ok(derived)
}

/// A path in a node's container: absolute, or in its working directory.
fn in_node_dir(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{NODE_DIR}/{path}")
    }
}

/// Nodes as containers.
pub struct DockerEnv {
    image_override: Option<String>,
    run: String,
    image: String,
    process_env: Vec<String>,
    cluster: Option<DockerCluster>,
    nodes: Vec<Node>,
    logs: Vec<PathBuf>,
    lock: Option<super::run_lock::RunLock>,
}

impl DockerEnv {
    pub fn new(o: &super::EnvOptions) -> DockerEnv {
        DockerEnv {
            image_override: o.image.clone(),
            run: String::new(),
            image: String::new(),
            process_env: Vec::new(),
            cluster: None,
            nodes: Vec::new(),
            logs: Vec::new(),
            lock: None,
        }
    }

    fn cluster(&self) -> Result<&DockerCluster, String> {
        self.cluster
            .as_ref()
            .ok_or_else(|| "the containers are not running".to_string())
    }

    fn cluster_mut(&mut self) -> Result<&mut DockerCluster, String> {
        self.cluster
            .as_mut()
            .ok_or_else(|| "the containers are not running".to_string())
    }
}

#[async_trait]
impl Target for DockerEnv {
    fn nodes(&self) -> Vec<Node> {
        self.nodes.clone()
    }
    fn lacks(&self, ability: Ability) -> Option<String> {
        match ability {
            Ability::Primaries => {
                Some("containers alone do not know who leads; the database does".into())
            }
            Ability::Membership => Some(crate::env::MEMBERSHIP_IS_THE_DATABASES.into()),
            Ability::Rebalance => Some(crate::env::REBALANCING_IS_THE_DATABASES.into()),
            _ => None,
        }
    }
    async fn partition(&mut self, grudge: &Grudge) -> Result<(), String> {
        self.cluster_mut()?.partition(grudge).await
    }
    async fn heal(&mut self) -> Result<(), String> {
        self.cluster_mut()?.heal().await
    }
    async fn kill(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.cluster_mut()?.kill(nodes).await
    }
    async fn restart(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.cluster_mut()?.restart(nodes).await
    }
    async fn pause(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.cluster_mut()?.pause(nodes).await
    }
    async fn resume(&mut self, nodes: &[Node]) -> Result<(), String> {
        self.cluster_mut()?.resume(nodes).await
    }
    async fn set_clock_offset(&mut self, node: &Node, delta_ms: i64) -> Result<(), String> {
        self.cluster_mut()?.set_clock_offset(node, delta_ms).await
    }
    async fn loss(&mut self, fraction: f64) -> Result<(), String> {
        self.cluster_mut()?.loss(fraction).await
    }
    async fn stop_loss(&mut self) -> Result<(), String> {
        self.cluster_mut()?.stop_loss().await
    }
}

#[async_trait]
impl super::Environment for DockerEnv {
    fn describe(&self) -> String {
        "Docker containers".into()
    }
    fn harness_program(&self) -> String {
        HARNESS_PROGRAM.into()
    }
    async fn place(
        &mut self,
        nodes: &[Node],
        ports: &[u16],
        image: &super::NodeImage,
        run_dir: &Path,
    ) -> Result<super::Addresses, super::EnvError> {
        let docker = connect().await?;
        self.image = node_image(&docker, image, self.image_override.as_deref()).await?;
        self.process_env = image.process_env.iter().map(|s| s.to_string()).collect();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // Short and unique: it names the network and the containers.
        self.run = format!(
            "{}{}x{}",
            image.recipe,
            std::process::id(),
            nanos % 1_000_000
        );
        let mut lock = super::run_lock::RunLock::create("docker", run_dir)
            .map_err(|e| DockerError::Other(format!("writing the run's lock file: {e}")))?;
        lock.set_docker_run(&self.run);
        self.lock = Some(lock);
        let cluster = DockerCluster::place(docker, &self.run, nodes, run_dir).await?;
        let mut addrs = super::Addresses::default();
        for (n, ip) in cluster.ips() {
            addrs.ips.insert(n.clone(), *ip);
            addrs.ports.insert(n.clone(), ports.to_vec());
        }
        self.nodes = nodes.to_vec();
        self.logs = nodes
            .iter()
            .map(|n| run_dir.join(format!("{n}.log")))
            .collect();
        self.cluster = Some(cluster);
        Ok(addrs)
    }
    async fn start(
        &mut self,
        node: &Node,
        command: super::NodeCommand,
    ) -> Result<(), super::EnvError> {
        let spec = NodeSpec {
            name: node.clone(),
            image: self.image.clone(),
            cmd: std::iter::once(command.program)
                .chain(command.args)
                .collect(),
            env: self.process_env.clone(),
            working_dir: Some(NODE_DIR.into()),
        };
        let files = command
            .files
            .into_iter()
            .map(|(name, bytes)| {
                (
                    format!("{NODE_DIR}/{name}"),
                    FileSource::Bytes(bytes),
                    0o644,
                )
            })
            .collect();
        let c = self.cluster_mut().map_err(super::EnvError::Other)?;
        Ok(c.create_node(&spec, files).await?)
    }
    async fn exec(&self, node: &Node, argv: &[&str]) -> Result<(i64, String), super::EnvError> {
        let c = self.cluster().map_err(super::EnvError::Other)?;
        Ok(c.exec(node, argv).await?)
    }
    async fn put_file(
        &self,
        node: &Node,
        path: &str,
        contents: &[u8],
    ) -> Result<(), super::EnvError> {
        let c = self.cluster().map_err(super::EnvError::Other)?;
        let path = in_node_dir(path);
        Ok(c.put_file(node, &path, contents, 0o644).await?)
    }
    async fn get_file(&self, node: &Node, path: &str) -> Result<Vec<u8>, super::EnvError> {
        let c = self.cluster().map_err(super::EnvError::Other)?;
        let path = in_node_dir(path);
        Ok(c.get_file(node, &path).await?)
    }
    async fn teardown(&mut self, leave_running: bool) -> Result<Vec<PathBuf>, super::EnvError> {
        if leave_running {
            if !self.run.is_empty() {
                eprintln!(
                    "left the containers running: `splitbrain clean`, or `docker rm -f $(docker ps -aq --filter label={LABEL_RUN}={})`, removes them",
                    self.run
                );
            }
            if let Some(lock) = self.lock.take() {
                lock.leave_running();
            }
            return Ok(self.logs.clone());
        }
        if let Some(mut c) = self.cluster.take() {
            c.destroy().await;
        }
        if !self.run.is_empty() {
            // Whatever carries this run's label, recorded or not.
            let docker = connect().await?;
            remove_run(&docker, &self.run).await?;
        }
        if let Some(lock) = self.lock.take() {
            lock.release();
        }
        Ok(self.logs.clone())
    }
}
