//! The Docker environment against the real engine: containers on a network
//! of their own, partitions that really cut links (and heal), kill and
//! restart, pause, a libfaketime clock offset, and nothing left behind.
//! Skipped with a clear message where there is no Docker engine.

use rand::SeedableRng;
use splitbrain::env::docker::image::{ensure, Recipe};
use splitbrain::env::docker::{connect, faketime_env, managed_by_run, DockerCluster, NodeSpec};
use splitbrain_nemesis::Target;
use splitbrain_nemesis::{grudge, PartitionShape};

#[test]
fn containers_take_faults_and_leave_nothing_behind() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let docker = match connect().await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("SKIPPED: containers_take_faults_and_leave_nothing_behind: {e}");
                return;
            }
        };
        let recipe = Recipe::new("base", &[]);
        let (tag, _) = ensure(
            &docker,
            &recipe,
            std::path::Path::new("/var/tmp/splitbrain-images"),
            false,
        )
        .await
        .expect("base image");
        // Deriving under a recipe's own name would replace (and prune) its image.
        let refused = splitbrain::env::docker::image::derive(&docker, &tag, "base", &[]).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("belongs to a recipe")),
            "{refused:?}"
        );
        let logs = tempfile::tempdir().unwrap();
        let run = format!("t{}", std::process::id());
        let specs: Vec<NodeSpec> = (1..=3)
            .map(|i| NodeSpec {
                name: format!("n{i}"),
                image: tag.clone(),
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo node up; exec sleep infinity".into(),
                ],
                env: faketime_env(),
                working_dir: None,
            })
            .collect();
        let mut c = DockerCluster::create(docker.clone(), &run, &specs, logs.path())
            .await
            .expect("create cluster");
        let outcome = async {
            c.heal().await?;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
            let g = grudge(PartitionShape::One, &c.node_names(), &[], &mut rng).unwrap();
            c.partition(&g).await?;
            c.heal().await?;
            c.kill(&["n2".to_string()]).await?;
            let (code, _) = c.exec("n1", &["true"]).await.map_err(|e| e.to_string())?;
            assert_eq!(code, 0);
            assert!(
                c.exec("n2", &["true"]).await.is_err(),
                "a killed container runs nothing"
            );
            // Files go in and come out through the API, a killed node's too.
            let note = b"written by the harness\n";
            c.put_file("n1", "/etc/splitbrain/note.txt", note, 0o644)
                .await
                .map_err(|e| e.to_string())?;
            let back = c
                .get_file("n1", "/etc/splitbrain/note.txt")
                .await
                .map_err(|e| e.to_string())?;
            assert_eq!(back, note);
            let hostname = c
                .get_file("n2", "/etc/hostname")
                .await
                .map_err(|e| e.to_string())?;
            assert_eq!(String::from_utf8_lossy(&hostname).trim(), "n2");
            assert!(c.get_file("n1", "/no/such/file").await.is_err());
            c.restart(&["n2".to_string()]).await?;
            c.pause(&["n3".to_string()]).await?;
            c.resume(&["n3".to_string()]).await?;
            c.set_clock_offset(&"n1".to_string(), 120_000).await?;
            c.set_clock_offset(&"n1".to_string(), 0).await?;
            Ok::<(), String>(())
        }
        .await;
        c.destroy().await;
        outcome.expect("faults took effect");
        assert_eq!(
            managed_by_run(&docker, &run).await.unwrap(),
            0,
            "containers or networks left behind"
        );
        let log = std::fs::read_to_string(logs.path().join("n1.log")).unwrap_or_default();
        assert!(log.contains("node up"), "node logs are collected: {log:?}");
    });
}
