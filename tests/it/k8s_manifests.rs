//! The Kubernetes manifests under deploy/k8s/ are written for users (there is no cluster here),
//! so they are checked three ways:
//! - against the Kubernetes API schema, strictly (no unknown field), with the
//!   `kubernetes-validate` validator from PyPI (installed by .ci/setup);
//! - for what the pgheal containers promise: a numeric non-root user that is the image's, a
//!   read-only root filesystem, resources, only environment variables pgheal reads, selectors
//!   and named ports that resolve, a grace period that covers pgheal's shutdown;
//! - by running them: each pgheal container's configuration (its arguments, the ConfigMap and
//!   Secret files mounted where the pod mounts them) starts a real pgheal in front of a real
//!   PostgreSQL, the probes' paths answer 200 on the port the probes name, and the Secret's
//!   password logs in through it (for the sidecar, with the app's own `DATABASE_URL`).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use common::certs::Dir;
use common::metrics::http_get;
use common::{start_pg, DB, USER};
use pgheal::config::cli::Cli;
use pgheal::config::Config;
use serde_yaml::Value;

/// The Kubernetes version the manifests are checked against: the oldest still in common use
/// whose API they need (policy/v1, apps/v1).
const KUBERNETES_VERSION: &str = "1.30.0";

fn k8s_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s")
}

/// Every manifest file and its documents.
fn manifests() -> Vec<(PathBuf, Vec<Value>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .expect("deploy/k8s")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "deploy/k8s holds the sidecar and the pooler"
    );
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read manifest");
            let docs = serde_yaml::Deserializer::from_str(&text)
                .map(|d| {
                    serde::Deserialize::deserialize(d)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                })
                .filter(|v: &Value| !v.is_null())
                .collect();
            (path, docs)
        })
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().expect("kind")
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().expect("metadata.name")
}

fn find<'a>(docs: &'a [Value], k: &str, n: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind(d) == k && name(d) == n)
        .unwrap_or_else(|| panic!("no {k} {n} in the same file"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every environment variable pgheal reads: those of its flags, plus the log filter.
fn pgheal_env_vars() -> BTreeSet<String> {
    let mut out: BTreeSet<String> = Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    out.insert("PGHEAL_LOG".into());
    out
}

/// The user id the image runs as (`USER uid:gid` in the Dockerfile).
fn image_uid() -> i64 {
    let text =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
            .expect("Dockerfile");
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("a USER line");
    user.split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the image's USER is numeric: {user}"))
}

/// A pod template with a pgheal container: (the workload, its pod spec, the container).
struct PghealPod<'a> {
    file: &'a Path,
    docs: &'a [Value],
    workload: &'a Value,
    pod: &'a Value,
    container: &'a Value,
}

fn pgheal_pods(all: &[(PathBuf, Vec<Value>)]) -> Vec<PghealPod<'_>> {
    let mut out = Vec::new();
    for (file, docs) in all {
        for d in docs {
            let pod = &d["spec"]["template"]["spec"];
            for c in pod["containers"].as_sequence().into_iter().flatten() {
                if c["image"].as_str().is_some_and(|i| i.contains("pgheal")) {
                    out.push(PghealPod {
                        file,
                        docs,
                        workload: d,
                        pod,
                        container: c,
                    });
                }
            }
        }
    }
    assert!(
        out.len() >= 2,
        "a sidecar and a pooler run pgheal ({} found)",
        out.len()
    );
    out
}

/// A container's security setting, the container's own over the pod's.
fn security<'a>(p: &'a PghealPod, key: &str) -> &'a Value {
    match &p.container["securityContext"][key] {
        Value::Null => &p.pod["securityContext"][key],
        v => v,
    }
}

#[test]
fn every_manifest_passes_the_kubernetes_api_schema_strictly() {
    let probe = Command::new("python3")
        .args(["-c", "import kubernetes_validate"])
        .output();
    let present = probe.as_ref().is_ok_and(|o| o.status.success());
    assert!(
        present,
        "the validator is missing (python3 -m pip install kubernetes-validate; .ci/setup installs it): {probe:?}"
    );
    for (file, _) in manifests() {
        let out = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "--quiet", "-k"])
            .arg(KUBERNETES_VERSION)
            .arg(&file)
            .output()
            .expect("run kubernetes_validate");
        assert!(
            out.status.success(),
            "{} does not validate against Kubernetes {KUBERNETES_VERSION}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn pgheal_containers_run_locked_down_as_the_images_user() {
    let all = manifests();
    let known = pgheal_env_vars();
    let uid = image_uid();
    for p in pgheal_pods(&all) {
        let at = format!("{}: {}", p.file.display(), name(p.workload));
        assert_eq!(
            security(&p, "runAsNonRoot").as_bool(),
            Some(true),
            "{at}: runAsNonRoot"
        );
        assert_eq!(
            security(&p, "runAsUser").as_i64(),
            Some(uid),
            "{at}: runAsUser is the image's numeric user"
        );
        let c = &p.container["securityContext"];
        assert_eq!(
            c["readOnlyRootFilesystem"].as_bool(),
            Some(true),
            "{at}: read-only root filesystem"
        );
        assert_eq!(
            c["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{at}: no privilege escalation"
        );
        assert_eq!(
            strings(&c["capabilities"]["drop"]),
            ["ALL"],
            "{at}: every capability dropped"
        );
        let res = &p.container["resources"];
        assert!(
            res["requests"]["memory"].is_string() && res["limits"]["memory"].is_string(),
            "{at}: memory request and limit"
        );
        for e in p.container["env"].as_sequence().into_iter().flatten() {
            let n = e["name"].as_str().expect("env name");
            assert!(
                known.contains(n),
                "{at}: sets {n}, which pgheal does not read"
            );
        }
        // The workload's selector picks its own pods; every Service and disruption budget of
        // the file that selects them, and every port they name, exists.
        let labels = p.workload["spec"]["template"]["metadata"]["labels"]
            .as_mapping()
            .expect("pod labels");
        let selects = |sel: &Value| {
            sel.as_mapping()
                .expect("a selector")
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        };
        assert!(
            selects(&p.workload["spec"]["selector"]["matchLabels"]),
            "{at}: selector"
        );
        let port_names: BTreeSet<&str> = p.pod["containers"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|c| c["ports"].as_sequence().into_iter().flatten())
            .filter_map(|port| port["name"].as_str())
            .collect();
        for d in p.docs {
            match kind(d) {
                "Service" if selects(&d["spec"]["selector"]) => {
                    for port in d["spec"]["ports"].as_sequence().expect("ports") {
                        if let Some(t) = port["targetPort"].as_str() {
                            assert!(port_names.contains(t), "{at}: Service targetPort {t}");
                        }
                    }
                }
                "PodDisruptionBudget" => assert!(
                    selects(&d["spec"]["selector"]["matchLabels"]),
                    "{at}: the disruption budget selects the pods"
                ),
                _ => {}
            }
        }
    }
}

/// The files a container sees under its volume mounts: mount path → (file name → content),
/// from the ConfigMaps and Secrets of the same manifest file.
fn mounted_files(p: &PghealPod) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for m in p.container["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let vol_name = m["name"].as_str().expect("mount name");
        let vol = p.pod["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .find(|v| v["name"].as_str() == Some(vol_name))
            .unwrap_or_else(|| panic!("volume {vol_name} is declared"));
        let (data, items) = if let Some(cm) = vol["configMap"]["name"].as_str() {
            (
                &find(p.docs, "ConfigMap", cm)["data"],
                &vol["configMap"]["items"],
            )
        } else if let Some(s) = vol["secret"]["secretName"].as_str() {
            (
                &find(p.docs, "Secret", s)["stringData"],
                &vol["secret"]["items"],
            )
        } else {
            continue;
        };
        let data = data.as_mapping().expect("data");
        let mut files = BTreeMap::new();
        match items.as_sequence() {
            Some(items) => {
                for it in items {
                    let key = &it["key"];
                    let content = data.get(key).unwrap_or_else(|| panic!("item {key:?}"));
                    files.insert(
                        it["path"].as_str().unwrap().to_owned(),
                        content.as_str().unwrap().to_owned(),
                    );
                }
            }
            None => {
                for (k, v) in data {
                    files.insert(
                        k.as_str().unwrap().to_owned(),
                        v.as_str().unwrap().to_owned(),
                    );
                }
            }
        }
        out.insert(m["mountPath"].as_str().unwrap().to_owned(), files);
    }
    out
}

/// A container port by name or number.
fn container_port(c: &Value, port: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return n as u16;
    }
    let n = port.as_str().expect("port name or number");
    c["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some(n))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {n}")) as u16
}

/// The configuration a pgheal container starts with: its arguments parsed as pgheal parses
/// them, with its mounted files written under `root` and their paths rewritten there.
fn container_config(p: &PghealPod, root: &Path) -> Config {
    let mounts = mounted_files(p);
    // Longest mount path first, so /etc/pgheal/secret wins over /etc/pgheal.
    let mut order: Vec<&String> = mounts.keys().collect();
    order.sort_by_key(|m| std::cmp::Reverse(m.len()));
    let local = |path: &str| -> String {
        for m in &order {
            if let Some(rest) = path.strip_prefix(m.as_str()) {
                return format!("{}{rest}", root.join(m.trim_start_matches('/')).display());
            }
        }
        path.to_owned()
    };
    for (m, files) in &mounts {
        let dir = root.join(m.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        for (f, content) in files {
            // Through placeholders, so a rewritten path is not rewritten again by a shorter
            // mount path it contains.
            let mut text = content.clone();
            for (i, m2) in order.iter().enumerate() {
                text = text.replace(m2.as_str(), &format!("\u{0}{i}\u{0}"));
            }
            for (i, m2) in order.iter().enumerate() {
                text = text.replace(&format!("\u{0}{i}\u{0}"), &local(m2));
            }
            std::fs::write(dir.join(f), text).unwrap();
        }
    }
    let mut argv = vec!["pgheal".to_owned()];
    argv.extend(strings(&p.container["args"]).iter().map(|a| local(a)));
    let mut cli = <Cli as clap::Parser>::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("pgheal refuses the container's arguments {argv:?}: {e}"));
    assert!(cli.command.is_none(), "the container runs the pooler");
    if let Some(f) = cli.config_file.take() {
        cli.run.config = Some(f);
    }
    assert!(
        cli.run.config.is_some(),
        "the container names its configuration file"
    );
    pgheal::config::load::load(&cli.run)
        .unwrap_or_else(|e| panic!("{}: the container's configuration: {e}", p.file.display()))
}

/// Each pgheal container of the manifests, started as configured in front of a real
/// PostgreSQL (addresses moved to loopback ports): the probes answer on the port they name and
/// the Secret's password logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_configure_a_pgheal_that_serves_their_probes_and_logins() {
    let all = manifests();
    let pg = start_pg();
    for p in pgheal_pods(&all) {
        let at = format!("{}: {}", p.file.display(), name(p.workload));
        let dir = Dir::new("k8s-manifest");
        let mut cfg = container_config(&p, &dir.0);

        // Ports: what the probes and the container ports name is what pgheal listens on.
        let metrics = cfg
            .metrics_listen
            .expect("metrics_listen: the probes need it");
        assert!(
            metrics.ip().is_unspecified(),
            "{at}: the kubelet probes the pod's address, so metrics listen on all of them: {metrics}"
        );
        let mut probe_paths = BTreeMap::new();
        for probe in ["readinessProbe", "livenessProbe"] {
            let get = &p.container[probe]["httpGet"];
            assert_eq!(
                container_port(p.container, &get["port"]),
                metrics.port(),
                "{at}: {probe} asks the metrics listener"
            );
            probe_paths.insert(probe, get["path"].as_str().expect("path").to_owned());
        }
        assert_eq!(probe_paths["readinessProbe"], "/readyz", "{at}");
        assert_eq!(probe_paths["livenessProbe"], "/healthz", "{at}");
        if let Some(port) = p.container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|x| x["name"].as_str() == Some("postgres"))
        {
            assert_eq!(
                port["containerPort"].as_u64(),
                Some(u64::from(cfg.listen.port())),
                "{at}: the postgres port is pgheal's listen port"
            );
            assert!(
                cfg.listen.ip().is_unspecified(),
                "{at}: a pooler listens on the pod's addresses"
            );
        }
        // The sidecar's app reaches pgheal at the address pgheal listens on.
        let app_url = p.pod["containers"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|c| c["env"].as_sequence().into_iter().flatten())
            .find(|e| e["name"].as_str() == Some("DATABASE_URL"))
            .and_then(|e| e["value"].as_str());
        if let Some(url) = app_url {
            assert!(
                url.contains(&format!("@{}/", cfg.listen)),
                "{at}: the app's DATABASE_URL {url} reaches pgheal at {}",
                cfg.listen
            );
        }
        // Graceful stop fits in the grace period, preStop included.
        let grace = p.pod["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        let pre_stop = strings(&p.container["lifecycle"]["preStop"]["exec"]["command"]);
        let pre_stop_secs = match pre_stop.as_slice() {
            [sleep, n] if sleep == "sleep" => n.parse().expect("sleep seconds"),
            [] => 0,
            other => panic!("{at}: preStop {other:?}"),
        };
        assert!(
            grace > cfg.shutdown_timeout.as_secs() + pre_stop_secs,
            "{at}: terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop_secs} s + shutdown_timeout {:?}",
            cfg.shutdown_timeout
        );

        // Run it here: loopback ports, this machine's PostgreSQL.
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.listen_also.clear();
        cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        for db in cfg.databases.values_mut() {
            db.host = "127.0.0.1".into();
            db.port = pg.port();
        }
        let secret = cfg
            .users
            .get(USER)
            .unwrap_or_else(|| panic!("{at}: the Secret lists the app's user {USER}"));
        let password = match secret {
            pgheal::auth::secret::Secret::Plain(p) => p.clone(),
            _ => panic!("{at}: the example Secret holds a plain password"),
        };
        common::admin(&pg, &format!("ALTER ROLE {USER} PASSWORD '{password}'"));
        let proxy = pgheal::proxy::start(cfg).await.expect("start pgheal");
        let maddr = proxy.metrics_addr.expect("metrics listener");
        for path in probe_paths.values() {
            let (status, body) = http_get(maddr, path).await;
            assert_eq!(status, 200, "{at}: GET {path}: {body}");
        }
        let url = format!(
            "postgres://{USER}:{password}@127.0.0.1:{}/{DB}",
            proxy.addr.port()
        );
        let client = common::connect(&url).await;
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1, "{at}");
        drop(client);
        proxy.shutdown().await;
    }
}
