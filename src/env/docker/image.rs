//! Images without a registry: a Debian root filesystem made with
//! debootstrap from the Debian packages this machine reaches, imported into
//! the engine as an image. The tag carries a hash of the recipe, so an image
//! is built once and rebuilt only when its recipe changes.
//!
//! The packages come from the Debian mirror that `splitbrain image build
//! --mirror URL` names or, without one, the first Debian archive in this
//! machine's own apt sources: the harness names no mirror of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::models::{ContainerConfig, ContainerCreateBody};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    ListImagesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::DockerError;

/// What goes into an image.
/// Where `splitbrain image build` and the docker environment keep their work.
pub const WORK_DIR: &str = "/var/tmp/splitbrain-images";

#[derive(Debug, Clone)]

pub struct Recipe {
    /// `etcd`, `redis`, `postgres`, `base`, ...
    pub name: &'static str,
    pub suite: &'static str,
    /// Where debootstrap fetches the packages; `None`: the first Debian
    /// archive in this machine's apt sources ([`mirror`]). Where packages
    /// come from is not what the image holds, so it is not in the tag.
    pub mirror: Option<String>,
    /// Debian packages on top of minbase.
    pub packages: Vec<&'static str>,
}

/// Tools every node image carries: the nemesis needs iptables and ping,
/// clock faults need libfaketime.
pub const BASE_PACKAGES: &[&str] = &[
    "iproute2",
    "iptables",
    "iputils-ping",
    "faketime",
    "procps",
    "ca-certificates",
];

impl Recipe {
    pub fn new(name: &'static str, extra: &[&'static str]) -> Recipe {
        let mut packages: Vec<&'static str> = BASE_PACKAGES.to_vec();
        packages.extend_from_slice(extra);
        packages.sort();
        packages.dedup();
        Recipe {
            name,
            suite: "bookworm",
            mirror: None,
            packages,
        }
    }

    /// The recipe, fetching its packages from `mirror`.
    pub fn with_mirror(mut self, mirror: Option<String>) -> Recipe {
        self.mirror = mirror;
        self
    }

    /// Text that changes whenever the image would.
    fn fingerprint(&self) -> String {
        format!("v2 {} {}", self.suite, self.packages.join(","))
    }

    /// `splitbrain-NAME:HASH`.
    pub fn tag(&self) -> String {
        format!(
            "splitbrain-{}:{}",
            self.name,
            short_hash(&self.fingerprint())
        )
    }
}

/// Whether the engine already has the image.
pub async fn exists(docker: &Docker, tag: &str) -> bool {
    docker.inspect_image(tag).await.is_ok()
}

fn run(cmd: &mut Command, what: &str) -> Result<(), DockerError> {
    let out = cmd
        .output()
        .map_err(|e| DockerError::Other(format!("cannot run {what}: {e}")))?;
    if !out.status.success() {
        let tail: String = String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(DockerError::Other(format!(
            "{what} failed ({}):\n{tail}",
            out.status
        )));
    }
    Ok(())
}

/// Build the root filesystem and pack it as a tar file (blocking; minutes).
pub fn build_rootfs_tar(recipe: &Recipe, work: &Path) -> Result<PathBuf, DockerError> {
    if which("debootstrap").is_none() {
        return Err(DockerError::Other(
            "debootstrap is not installed (apt-get -o DPkg::Lock::Timeout=600 install -y debootstrap)".into(),
        ));
    }
    let mirror = mirror(recipe.mirror.as_deref(), recipe.suite)?;
    let root = work.join(format!("rootfs-{}", recipe.name));
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .map_err(|e| DockerError::Other(format!("cannot clear {}: {e}", root.display())))?;
    }
    std::fs::create_dir_all(work)
        .map_err(|e| DockerError::Other(format!("cannot create {}: {e}", work.display())))?;
    run(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", recipe.packages.join(",")))
            .arg(recipe.suite)
            .arg(&root)
            .arg(&mirror),
        "debootstrap",
    )?;
    // Packages' caches are dead weight in an image.
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let p = root.join(dir);
        if let Ok(entries) = std::fs::read_dir(&p) {
            for e in entries.flatten() {
                if e.path().is_file() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    // libfaketime reads this file on every clock call; empty means "no offset".
    std::fs::write(root.join("etc/splitbrain-faketime"), "+0s\n")
        .map_err(|e| DockerError::Other(format!("cannot write faketime file: {e}")))?;
    let tar = work.join(format!("rootfs-{}.tar", recipe.name));
    run(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("--numeric-owner")
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        "tar",
    )?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(tar)
}

/// Where apt reads its sources, in apt's order: the main file, then the
/// directory's `.list` (one-line) and `.sources` (deb822) files by name.
const APT_SOURCES: &str = "/etc/apt/sources.list";
const APT_SOURCES_DIR: &str = "/etc/apt/sources.list.d";

/// The mirror to build from: `chosen` (`--mirror`) when given, else the
/// first Debian archive in this machine's apt sources.
pub fn mirror(chosen: Option<&str>, suite: &str) -> Result<String, DockerError> {
    if let Some(m) = chosen {
        return check_mirror(m).map(str::to_string);
    }
    let mut files = Vec::new();
    if let Ok(text) = std::fs::read_to_string(APT_SOURCES) {
        files.push((PathBuf::from(APT_SOURCES), text));
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(APT_SOURCES_DIR)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    for p in names {
        if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("list" | "sources")
        ) {
            if let Ok(text) = std::fs::read_to_string(&p) {
                files.push((p, text));
            }
        }
    }
    debian_archive(&files, suite).ok_or(DockerError::NoMirror)
}

/// A `--mirror` URL debootstrap can fetch from, or why not.
pub fn check_mirror(m: &str) -> Result<&str, DockerError> {
    let scheme_ok = ["http://", "https://", "file:/"]
        .iter()
        .any(|s| m.starts_with(s));
    if scheme_ok && !m.contains(char::is_whitespace) && m.len() > "file:/".len() {
        Ok(m)
    } else {
        Err(DockerError::BadMirror(m.to_string()))
    }
}

/// One `deb` source: an archive and what it is asked for.
#[derive(Debug, Clone, PartialEq)]
struct AptSource {
    uri: String,
    suites: Vec<String>,
    components: Vec<String>,
}

impl AptSource {
    /// Debian's own archive (not its security archive, nor a third party's):
    /// a `main` component, and a URI ending in `/debian` or the recipe's suite.
    fn is_debian_archive(&self, suite: &str) -> bool {
        let fetchable = ["http://", "https://", "file:/"]
            .iter()
            .any(|s| self.uri.starts_with(s));
        let path_is_debian = self.uri.trim_end_matches('/').rsplit('/').next() == Some("debian");
        fetchable
            && self.components.iter().any(|c| c == "main")
            && (path_is_debian || self.suites.iter().any(|s| s == suite))
    }
}

/// The first Debian archive among apt source files, (path, text) in apt's
/// order; a file is deb822 when its path ends in `.sources`.
fn debian_archive(files: &[(PathBuf, String)], suite: &str) -> Option<String> {
    files
        .iter()
        .flat_map(|(path, text)| {
            if path.extension().and_then(|e| e.to_str()) == Some("sources") {
                deb822_sources(text)
            } else {
                one_line_sources(text)
            }
        })
        .find(|s| s.is_debian_archive(suite))
        .map(|s| s.uri.trim_end_matches('/').to_string())
}

/// `deb [options] URI SUITE [COMPONENT...]` lines (`deb-src` and comments skipped).
fn one_line_sources(text: &str) -> Vec<AptSource> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            if words.next() != Some("deb") {
                return None;
            }
            let mut word = words.next()?;
            if word.starts_with('[') {
                // Options, which may hold spaces: up to the word that closes them.
                while !word.ends_with(']') {
                    word = words.next()?;
                }
                word = words.next()?;
            }
            Some(AptSource {
                uri: word.to_string(),
                suites: vec![words.next()?.to_string()],
                components: words.map(str::to_string).collect(),
            })
        })
        .collect()
}

/// deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Components:`,
/// `Enabled:`), one source per URI of an enabled stanza of type `deb`.
fn deb822_sources(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    let mut stanza: Vec<(String, String)> = Vec::new();
    let mut flush = |stanza: &mut Vec<(String, String)>| {
        let field = |name: &str| {
            stanza
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map_or("", |(_, v)| v.as_str())
        };
        let words = |name: &str| -> Vec<String> {
            field(name).split_whitespace().map(str::to_string).collect()
        };
        let enabled = !field("Enabled").trim().eq_ignore_ascii_case("no");
        if enabled && words("Types").iter().any(|t| t == "deb") {
            for uri in words("URIs") {
                out.push(AptSource {
                    uri,
                    suites: words("Suites"),
                    components: words("Components"),
                });
            }
        }
        stanza.clear();
    };
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut stanza);
        } else if line.starts_with([' ', '\t']) {
            // A continuation of the field before.
            if let Some((_, v)) = stanza.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            stanza.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    flush(&mut stanza);
    out
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// Import a root filesystem tar as `tag`.
pub async fn import(docker: &Docker, tar: &Path, tag: &str) -> Result<(), DockerError> {
    let (repo, version) = tag.split_once(':').unwrap_or((tag, "latest"));
    let body = super::file_body(tar).await?;
    let opts = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(repo)
        .tag(version)
        .build();
    let mut progress = docker.create_image(Some(opts), Some(bollard::body_stream(body)), None);
    while let Some(step) = progress.next().await {
        step?;
    }
    if !exists(docker, tag).await {
        return Err(DockerError::Other(format!(
            "the engine did not keep the imported image {tag}"
        )));
    }
    Ok(())
}

/// The image for a recipe: reused when the engine has it, built otherwise.
pub async fn ensure(
    docker: &Docker,
    recipe: &Recipe,
    work: &Path,
    force: bool,
) -> Result<(String, bool), DockerError> {
    let tag = recipe.tag();
    if !force && exists(docker, &tag).await {
        return Ok((tag, false));
    }
    let r = recipe.clone();
    let w = work.to_path_buf();
    let tar = tokio::task::spawn_blocking(move || build_rootfs_tar(&r, &w))
        .await
        .map_err(|e| DockerError::Other(format!("the build task failed: {e}")))??;
    let result = import(docker, &tar, &tag).await;
    let _ = std::fs::remove_file(&tar);
    result.map(|()| (tag, true))
}

/// An image of `base` with files from this host added: `splitbrain-NAME:HASH`,
/// where the hash covers the base and each file's path, size and modification
/// time, so that a rebuilt binary gets a new image and an unchanged one reuses
/// its image. Made through the API: a stopped container of `base`, the files
/// copied in, the container committed. Older images of the same name are
/// removed (one binary's worth of disk, not one per build). Returns the tag and
/// whether it was made now.
pub async fn derive(
    docker: &Docker,
    base: &str,
    name: &str,
    files: &[(PathBuf, String)],
) -> Result<(String, bool), DockerError> {
    let repo = format!("splitbrain-{name}");
    // Deriving under the base's own name would remove the base as an "older" image.
    if base.split(':').next() == Some(repo.as_str()) || !name.ends_with("-harness") {
        return Err(DockerError::Other(format!(
            "cannot derive image {repo} from {base}: the name belongs to a recipe's image"
        )));
    }
    let mut fingerprint = format!("v1 {base}");
    for (host, dest) in files {
        let meta = std::fs::metadata(host)
            .map_err(|e| DockerError::Other(format!("cannot read {}: {e}", host.display())))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        fingerprint.push_str(&format!(
            " {} {dest} {} {mtime}",
            host.display(),
            meta.len()
        ));
    }
    let version = short_hash(&fingerprint);
    let tag = format!("{repo}:{version}");
    if exists(docker, &tag).await {
        return Ok((tag, false));
    }
    let container = format!("sb-image-{name}-{}-{version}", std::process::id());
    docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::new()
                    .name(&container)
                    .build(),
            ),
            ContainerCreateBody {
                image: Some(base.to_string()),
                cmd: Some(vec!["true".into()]),
                labels: Some(super::labels(&format!("image-{name}"))),
                ..Default::default()
            },
        )
        .await?;
    let made = async {
        let copies = files
            .iter()
            .map(|(host, dest)| (dest.clone(), super::FileSource::Host(host.clone()), 0o755))
            .collect();
        super::copy_in(docker, &container, copies).await?;
        docker
            .commit_container(
                CommitContainerOptionsBuilder::new()
                    .container(&container)
                    .repo(&repo)
                    .tag(&version)
                    .comment(&format!(
                        "{base} with {} file(s) from the harness's host",
                        files.len()
                    ))
                    .build(),
                ContainerConfig::default(),
            )
            .await?;
        Ok::<_, DockerError>(())
    }
    .await;
    let _ = docker
        .remove_container(
            &container,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await;
    made?;
    if !exists(docker, &tag).await {
        return Err(DockerError::Other(format!(
            "the engine did not keep the committed image {tag}"
        )));
    }
    let older = docker
        .list_images(Some(
            ListImagesOptionsBuilder::new()
                .filters(&HashMap::from([("reference", vec![repo.as_str()])]))
                .build(),
        ))
        .await
        .unwrap_or_default();
    for image in older {
        for t in image.repo_tags.iter().filter(|t| **t != tag) {
            // An image still in use by a running test stays.
            let _ = docker
                .remove_image(t, None::<RemoveImageOptions>, None)
                .await;
        }
    }
    Ok((tag, true))
}

/// 12 hex digits of FNV-1a: an image tag that changes with `text`.
fn short_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", h & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_change_with_the_recipe() {
        let a = Recipe::new("etcd", &["etcd-server", "etcd-client"]);
        let b = Recipe::new("redis", &["redis-server"]);
        assert!(a.tag().starts_with("splitbrain-etcd:"));
        assert_ne!(a.tag(), b.tag());
        assert_eq!(
            a.tag(),
            Recipe::new("etcd", &["etcd-server", "etcd-client"]).tag(),
            "stable across calls"
        );
        assert!(a.packages.contains(&"iptables") && a.packages.contains(&"etcd-server"));
    }

    #[test]
    fn tags_do_not_depend_on_the_mirror() {
        let a = Recipe::new("etcd", &["etcd-server", "etcd-client"]);
        let b = a
            .clone()
            .with_mirror(Some("http://mirror.example/debian".into()));
        assert_eq!(a.tag(), b.tag());
    }

    #[test]
    fn the_mirror_is_the_first_debian_archive_in_the_apt_sources() {
        let list = "\
# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://thirdparty.example/apt cloud-sdk main
deb [ arch=amd64 ] http://mirror.example/debian/ bookworm main contrib # the archive
deb http://second.example/debian bookworm main
";
        let sources = one_line_sources(list);
        assert_eq!(sources.len(), 3, "{sources:?}");
        assert_eq!(sources[1].suites, vec!["bookworm".to_string()]);
        assert_eq!(sources[1].components, vec!["main", "contrib"]);
        let one = |name: &str, text: &str| vec![(PathBuf::from(name), text.to_string())];
        assert_eq!(
            debian_archive(&one("/etc/apt/sources.list", list), "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );

        let deb822 = "\
Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

# A disabled stanza, then one whose fields run over two lines.
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

types: deb deb-src
URIs: http://mirror.example/debian
  http://second.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";
        let sources = deb822_sources(deb822);
        assert_eq!(
            sources.iter().map(|s| s.uri.as_str()).collect::<Vec<_>>(),
            vec![
                "http://mirror.example/debian-security",
                "http://mirror.example/debian",
                "http://second.example/debian"
            ]
        );
        assert_eq!(
            debian_archive(
                &one("/etc/apt/sources.list.d/debian.sources", deb822),
                "bookworm"
            )
            .as_deref(),
            Some("http://mirror.example/debian")
        );

        // A suite-named archive elsewhere than /debian counts; third parties
        // (no `main`) and other distributions' suites do not.
        let other = "\
deb http://thirdparty.example/linux/debian bookworm stable
deb http://other.example/ubuntu jammy main
deb http://mirror.example/pub/archive bookworm main
";
        assert_eq!(
            debian_archive(&one("a.list", other), "bookworm").as_deref(),
            Some("http://mirror.example/pub/archive")
        );
        // In apt's order: the first file's archive wins.
        let both = [
            (PathBuf::from("a.list"), list.to_string()),
            (PathBuf::from("b.sources"), deb822.to_string()),
        ];
        assert_eq!(
            debian_archive(&both, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            debian_archive(
                &one("c.list", "deb http://other.example/ubuntu jammy main\n"),
                "bookworm"
            ),
            None
        );
        assert_eq!(debian_archive(&[], "bookworm"), None);
    }

    #[test]
    fn a_chosen_mirror_must_be_a_url() {
        assert_eq!(
            mirror(Some("http://mirror.example/debian"), "bookworm").unwrap(),
            "http://mirror.example/debian"
        );
        assert!(mirror(Some("file:///srv/debian"), "bookworm").is_ok());
        for bad in [
            "mirror.example/debian",
            "ftp://mirror.example/debian",
            "http://a b",
            "",
        ] {
            assert!(
                matches!(
                    mirror(Some(bad), "bookworm"),
                    Err(DockerError::BadMirror(_))
                ),
                "{bad}"
            );
        }
    }
}
