//! Images without a registry: a Debian root filesystem made with
//! debootstrap from the Debian packages this machine reaches, imported into
//! the engine as an image. The tag carries a hash of the recipe, so an image
//! is built once and rebuilt only when its recipe changes.

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
#[derive(Debug, Clone)]
pub struct Recipe {
    /// `etcd`, `redis`, `postgres`, `base`, ...
    pub name: &'static str,
    pub suite: &'static str,
    pub mirror: &'static str,
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
            mirror: "http://deb.debian.org/debian",
            packages,
        }
    }

    /// The recipes the harness knows.
    pub fn named(name: &str) -> Option<Recipe> {
        Some(match name {
            "base" | "refstore" => Recipe::new("base", &[]),
            "etcd" => Recipe::new("etcd", &["etcd-server", "etcd-client"]),
            "redis" => Recipe::new("redis", &["redis-server", "redis-sentinel", "redis-tools"]),
            "postgres" => Recipe::new("postgres", &["postgresql"]),
            _ => return None,
        })
    }

    /// Text that changes whenever the image would.
    fn fingerprint(&self) -> String {
        format!(
            "v1 {} {} {}",
            self.suite,
            self.mirror,
            self.packages.join(",")
        )
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
            .arg(recipe.mirror),
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
    if base.split(':').next() == Some(repo.as_str())
        || Recipe::named(name).is_some_and(|r| r.name == name)
    {
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
        let a = Recipe::named("etcd").unwrap();
        let b = Recipe::named("redis").unwrap();
        assert!(a.tag().starts_with("splitbrain-etcd:"));
        assert_ne!(a.tag(), b.tag());
        assert_eq!(
            a.tag(),
            Recipe::named("etcd").unwrap().tag(),
            "stable across calls"
        );
        assert!(a.packages.contains(&"iptables") && a.packages.contains(&"etcd-server"));
        assert!(Recipe::named("oracle").is_none());
    }
}
