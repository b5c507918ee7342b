//! The Dockerfile, docker-compose.yml and deploy/make-certs.sh are written for users (there is
//! no container engine here), so they are checked by reading them: every pgheal setting they
//! name is one pgheal has, the ports they publish are the ones pgheal listens on, the upstream
//! URL parses, the files they mount exist, and the certificate script makes certificates that
//! verify against its CA for the names the compose file uses — and that work: PostgreSQL with
//! `ssl = on` and pgheal configured as the compose file configures it, reached by psql with
//! `sslmode=verify-full`, TLS on both sides.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use common::certs::Dir;
use common::client_tls::psql;
use common::{start_pg, start_proxy_with, DB, PASSWORD, USER};
use pgheal::config::cli::Cli;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;
use pgheal::config::upstream::Upstream;
use serde_yaml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(repo().join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// Every environment variable pgheal reads: those of its flags, plus the log filter.
fn pgheal_env_vars() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for a in cmd.get_arguments() {
            if let Some(env) = a.get_env() {
                out.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&Cli::command(), &mut out);
    out.insert("PGHEAL_LOG".into());
    out
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped:
/// (INSTRUCTION, arguments).
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = t.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (ins, args) = current.split_once(' ').unwrap_or((current.as_str(), ""));
        out.push((ins.to_ascii_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    assert!(
        current.is_empty(),
        "the Dockerfile ends inside a continued line"
    );
    out
}

/// `KEY=value KEY2=value2` of an ENV instruction.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    args.split_whitespace()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("ENV {kv:?} is not KEY=value"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn port_of(listen: &str) -> u16 {
    listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{listen:?} has no port"))
}

/// The image's default command (`CMD`, used when no command is given) as pgheal parses it.
fn default_command(ins: &[(String, String)]) -> pgheal::config::cli::Cli {
    let cmd = &ins
        .iter()
        .rev()
        .find(|(i, _)| i == "CMD")
        .expect("a CMD with the listen addresses")
        .1;
    let args: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec form");
    let argv = std::iter::once("pgheal".to_owned()).chain(args);
    <pgheal::config::cli::Cli as clap::Parser>::try_parse_from(argv)
        .unwrap_or_else(|e| panic!("pgheal refuses the image's CMD {cmd}: {e}"))
}

#[test]
fn the_dockerfile_sets_real_settings_and_exposes_the_ports_pgheal_listens_on() {
    let ins = dockerfile();
    // No PGHEAL_* variable in the image: a variable wins over the file, so one set by the
    // image would silently override the listen addresses of a mounted configuration.
    for (i, args) in &ins {
        if i == "ENV" {
            for (k, _) in env_pairs(args) {
                assert!(
                    !k.starts_with("PGHEAL_"),
                    "the image sets {k}, which would override a mounted configuration"
                );
            }
        }
    }
    // The listen addresses come from the default command, which a given command replaces.
    let cli = default_command(&ins);
    assert!(cli.command.is_none() && cli.config_file.is_none());
    let listen = cli.run.listen.clone().expect("CMD gives --listen");
    let metrics = cli
        .run
        .metrics_listen
        .clone()
        .expect("CMD gives --metrics-listen");
    assert_ne!(
        port_of(&metrics),
        9187,
        "9187 is postgres_exporter's port, often beside a pooler"
    );
    let exposed: BTreeSet<u16> = ins
        .iter()
        .filter(|(i, _)| i == "EXPOSE")
        .flat_map(|(_, a)| {
            a.split_whitespace()
                .map(|p| p.parse::<u16>().expect("port"))
        })
        .collect();
    assert_eq!(
        exposed,
        BTreeSet::from([port_of(&listen), port_of(&metrics)]),
        "EXPOSE must name the client and metrics ports"
    );
    // A numeric user, so Kubernetes' runAsNonRoot can check it without a passwd file.
    let user = &ins
        .iter()
        .rev()
        .find(|(i, _)| i == "USER")
        .expect("a USER")
        .1;
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER is numeric: {user}"));
    assert_ne!(uid, 0, "the image must not run as root");
    // The binary is built stripped, without debug information.
    let cargo: toml::Value = toml::from_str(&read("Cargo.toml")).expect("Cargo.toml");
    let dist = &cargo["profile"]["dist"];
    assert_eq!(dist["strip"].as_str(), Some("symbols"), "{dist:?}");
    assert_eq!(dist["debug"].as_bool(), Some(false), "{dist:?}");
    let entry = ins
        .iter()
        .rev()
        .find(|(i, _)| i == "ENTRYPOINT")
        .expect("ENTRYPOINT");
    assert_eq!(entry.1, "[\"pgheal\"]");
    let copy = ins
        .iter()
        .any(|(i, a)| i == "COPY" && a.contains("/usr/local/bin/pgheal"));
    assert!(copy, "the runtime stage installs the binary on the PATH");
    let build = ins
        .iter()
        .find(|(i, a)| i == "RUN" && a.contains("cargo build"))
        .expect("a cargo build step");
    assert!(
        build.1.contains("--locked"),
        "the image builds from Cargo.lock"
    );
    // The user id the certificate script gives pgheal's key to.
    let useradd = ins
        .iter()
        .find(|(i, a)| i == "RUN" && a.contains("useradd"))
        .expect("a useradd step");
    assert!(
        useradd.1.contains(&format!("--uid {uid}")),
        "the image's user {uid} has an entry: {}",
        useradd.1
    );
    // The health check asks pgheal itself (GET /readyz on the metrics listener the image
    // sets), with a command line pgheal accepts.
    let check = ins
        .iter()
        .rev()
        .find(|(i, _)| i == "HEALTHCHECK")
        .expect("a HEALTHCHECK");
    let exec = check
        .1
        .split_once("CMD ")
        .map(|(_, c)| c.trim())
        .expect("HEALTHCHECK ... CMD [...]");
    let argv: Vec<String> = serde_json::from_str(exec).expect("CMD in exec form");
    assert_eq!(argv[..2], ["pgheal", "healthcheck"], "{exec}");
    let cli = <pgheal::config::cli::Cli as clap::Parser>::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("{exec}: {e}"));
    match cli.command {
        Some(pgheal::config::cli::Command::Healthcheck {
            live: false,
            metrics_listen,
            ..
        }) => assert_eq!(
            port_of(&metrics_listen),
            port_of(&metrics),
            "the check asks the metrics listener of the default command"
        ),
        other => panic!("the check asks for readiness: {exec}: {other:?}"),
    }
}

fn compose() -> Value {
    serde_yaml::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML")
}

fn service<'a>(c: &'a Value, name: &str) -> &'a Value {
    &c["services"][name]
}

/// A service's `environment` as pairs (map or list form).
fn environment(s: &Value) -> Vec<(String, String)> {
    match &s["environment"] {
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => panic!("environment value {other:?}"),
                };
                (k.as_str().expect("key").to_owned(), v)
            })
            .collect(),
        Value::Sequence(list) => list
            .iter()
            .map(|e| {
                let (k, v) = e.as_str().expect("KEY=value").split_once('=').expect("=");
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Value::Null => Vec::new(),
        other => panic!("environment {other:?}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_compose_file_wires_pgheal_to_its_postgres_with_real_settings() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    let pgheal = service(&c, "pgheal");
    assert_eq!(
        pgheal["build"].as_str(),
        Some("."),
        "pgheal is built from this repository"
    );
    let env = environment(pgheal);
    let known = pgheal_env_vars();
    for (k, _) in &env {
        assert!(
            known.contains(k),
            "compose sets {k}, which pgheal does not read"
        );
    }
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let upstream = Upstream::parse("PGHEAL_UPSTREAM", get("PGHEAL_UPSTREAM").expect("upstream"))
        .expect("the upstream URL parses");
    assert!(
        names.contains(upstream.host.as_str()),
        "the upstream host {:?} is a service of the file",
        upstream.host
    );
    // The database, user and password match what the postgres service creates.
    let pg_env = environment(service(&c, &upstream.host));
    let pg = |k: &str| pg_env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(pg("POSTGRES_USER").as_deref(), Some(upstream.user.as_str()));
    assert_eq!(pg("POSTGRES_DB").as_deref(), Some(upstream.dbname.as_str()));
    assert_eq!(pg("POSTGRES_PASSWORD"), upstream.password);
    assert_eq!(upstream.port, 5432);
    // Published ports are the ones pgheal listens on.
    let published: BTreeSet<u16> = strings(&pgheal["ports"])
        .iter()
        .map(|p| {
            p.rsplit(':')
                .next()
                .unwrap()
                .parse()
                .expect("container port")
        })
        .collect();
    let image = default_command(&dockerfile());
    let listen = get("PGHEAL_LISTEN")
        .map(str::to_owned)
        .or(image.run.listen)
        .expect("a listen address");
    let metrics = get("PGHEAL_METRICS_LISTEN")
        .map(str::to_owned)
        .or(image.run.metrics_listen)
        .expect("a metrics address");
    assert_eq!(
        published,
        BTreeSet::from([port_of(&listen), port_of(&metrics)])
    );
    // Every dependency is a service of the file; bind mounts name files of the repository.
    for (_, s) in services {
        if let Some(deps) = s["depends_on"].as_mapping() {
            for d in deps.keys() {
                assert!(names.contains(d.as_str().unwrap()), "depends_on {d:?}");
            }
        }
        for v in strings(&s["volumes"]) {
            let source = v.split(':').next().unwrap();
            if source.starts_with("./") {
                assert!(
                    repo().join(source).exists(),
                    "compose mounts {source}, which is missing"
                );
            } else {
                let volumes = c["volumes"]
                    .as_mapping()
                    .expect("named volumes are declared");
                assert!(
                    volumes.contains_key(source),
                    "volume {source} is not declared"
                );
            }
        }
    }
    // The grace period covers pgheal's shutdown timeout (30 s unless set).
    let grace = pgheal["stop_grace_period"]
        .as_str()
        .expect("stop_grace_period");
    let secs: u64 = grace.trim_end_matches('s').parse().expect("seconds");
    let timeout: u64 = get("PGHEAL_SHUTDOWN_TIMEOUT")
        .map(|t| t.trim_end_matches('s').parse().expect("seconds"))
        .unwrap_or(30);
    assert!(
        secs > timeout,
        "stop_grace_period {secs}s must exceed {timeout}s"
    );
}

/// A bind mount's container path for a file of the repository, in a service of the compose file.
fn mounted_at(s: &Value, repo_file: &str) -> String {
    strings(&s["volumes"])
        .iter()
        .find_map(|v| {
            let mut parts = v.split(':');
            (parts.next() == Some(repo_file)).then(|| parts.next().expect("target").to_owned())
        })
        .unwrap_or_else(|| panic!("{repo_file} is not mounted"))
}

/// Prometheus scrapes pgheal where it serves metrics and loads pgheal's alert rules; Grafana
/// gets Prometheus as its data source and pgheal's dashboard; the README's Grafana login is
/// the one the file sets.
#[test]
fn the_compose_file_adds_prometheus_with_the_rules_and_grafana_with_the_dashboard() {
    let c = compose();
    let pgheal_env = environment(service(&c, "pgheal"));
    let metrics = pgheal_env
        .iter()
        .find(|(k, _)| k == "PGHEAL_METRICS_LISTEN")
        .map(|(_, v)| v.clone())
        .or(default_command(&dockerfile()).run.metrics_listen)
        .expect("metrics address");

    let prom = service(&c, "prometheus");
    let config_path = strings(&prom["command"])
        .iter()
        .find_map(|a| a.strip_prefix("--config.file=").map(str::to_owned))
        .expect("--config.file");
    assert_eq!(
        mounted_at(prom, "./deploy/compose/prometheus.yml"),
        config_path
    );
    let prom_cfg: Value =
        serde_yaml::from_str(&read("deploy/compose/prometheus.yml")).expect("prometheus.yml");
    let rules_at = mounted_at(prom, "./deploy/prometheus-rules.yml");
    assert_eq!(
        strings(&prom_cfg["rule_files"]),
        [rules_at],
        "Prometheus loads pgheal's alert rules where they are mounted"
    );
    let targets: Vec<String> = prom_cfg["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .flat_map(|j| j["static_configs"].as_sequence().into_iter().flatten())
        .flat_map(|sc| strings(&sc["targets"]))
        .collect();
    assert!(
        targets.contains(&format!("pgheal:{}", port_of(&metrics))),
        "Prometheus scrapes pgheal's metrics port {}: {targets:?}",
        port_of(&metrics)
    );

    let grafana = service(&c, "grafana");
    let ds_dir = mounted_at(grafana, "./deploy/compose/grafana-datasource.yml");
    assert!(
        ds_dir.starts_with("/etc/grafana/provisioning/datasources/"),
        "{ds_dir}"
    );
    let ds: Value = serde_yaml::from_str(&read("deploy/compose/grafana-datasource.yml"))
        .expect("datasource provisioning");
    let prom_port = strings(&prom["ports"])
        .first()
        .and_then(|p| p.rsplit(':').next().map(str::to_owned))
        .expect("prometheus port");
    assert_eq!(
        ds["datasources"][0]["url"].as_str(),
        Some(format!("http://prometheus:{prom_port}").as_str())
    );
    let provider_dir = mounted_at(grafana, "./deploy/compose/grafana-dashboards.yml");
    assert!(
        provider_dir.starts_with("/etc/grafana/provisioning/dashboards/"),
        "{provider_dir}"
    );
    let providers: Value = serde_yaml::from_str(&read("deploy/compose/grafana-dashboards.yml"))
        .expect("dashboard provisioning");
    let dash_dir = providers["providers"][0]["options"]["path"]
        .as_str()
        .expect("provider path");
    let dash_at = mounted_at(grafana, "./deploy/grafana-dashboard.json");
    assert!(
        dash_at.starts_with(&format!("{dash_dir}/")),
        "the dashboard {dash_at} is in the provider's directory {dash_dir}"
    );

    let env = environment(grafana);
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k}"))
    };
    let login = format!(
        "{} / {}",
        get("GF_SECURITY_ADMIN_USER"),
        get("GF_SECURITY_ADMIN_PASSWORD")
    );
    for (file, text) in [
        ("README.md", read("README.md")),
        ("docker-compose.yml", read("docker-compose.yml")),
    ] {
        assert!(
            text.contains(&login),
            "{file} gives Grafana's login as the compose file sets it ({login})"
        );
    }
    // The README's psql line for the compose set-up uses the compose file's credentials.
    let up = Upstream::parse(
        "PGHEAL_UPSTREAM",
        &pgheal_env
            .iter()
            .find(|(k, _)| k == "PGHEAL_UPSTREAM")
            .expect("upstream")
            .1,
    )
    .unwrap();
    let readme = read("README.md");
    let want = format!(
        "postgres://{}:{}@localhost:6432/{}",
        up.user,
        up.password.as_deref().unwrap_or(""),
        up.dbname
    );
    assert!(
        readme.contains(&want),
        "the README's compose example connects with {want}"
    );
}

fn openssl(args: &[&str], dir: &Path) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (is it installed? .ci/setup installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_certificate_script_makes_certificates_for_the_compose_host_names() {
    let dir = std::env::temp_dir().join(format!("pgheal-deploy-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = || {
        let out = Command::new("sh")
            .arg(repo().join("deploy/make-certs.sh"))
            .arg(&dir)
            .output()
            .expect("run deploy/make-certs.sh");
        assert!(
            out.status.success(),
            "make-certs.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run();
    let first = std::fs::read(dir.join("pgheal.crt")).expect("pgheal.crt");
    run();
    assert_eq!(
        std::fs::read(dir.join("pgheal.crt")).unwrap(),
        first,
        "a second run keeps the certificates"
    );
    let verified = openssl(
        &["verify", "-CAfile", "ca.crt", "postgres.crt", "pgheal.crt"],
        &dir,
    );
    assert!(verified.contains("postgres.crt: OK") && verified.contains("pgheal.crt: OK"));
    let names = |cert: &str| {
        openssl(
            &["x509", "-in", cert, "-noout", "-ext", "subjectAltName"],
            &dir,
        )
    };
    // The compose file's service names are the names the certificates are for.
    assert!(names("postgres.crt").contains("DNS:postgres"));
    let p = names("pgheal.crt");
    for n in ["DNS:pgheal", "DNS:localhost", "IP Address:127.0.0.1"] {
        assert!(p.contains(n), "pgheal.crt lacks {n}: {p}");
    }
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca.key", "postgres.key", "pgheal.key"] {
        let mode = std::fs::metadata(dir.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key} must be private");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `/certs/...` files the compose file's services read, by name.
fn compose_cert_files(c: &Value) -> BTreeSet<String> {
    let mut texts: Vec<String> = Vec::new();
    for (_, s) in c["services"].as_mapping().expect("services") {
        texts.extend(environment(s).into_iter().map(|(_, v)| v));
        texts.extend(strings(&s["command"]));
    }
    let mut files = BTreeSet::new();
    for t in texts {
        for part in t.split(['=', '&', '?', ' ']) {
            if let Some(name) = part.strip_prefix("/certs/") {
                files.insert(name.to_owned());
            }
        }
    }
    files
}

/// Run deploy/make-certs.sh into `dir` with `env`.
fn make_certs(dir: &Path, env: &[(&str, String)]) {
    let out = Command::new("sh")
        .arg(repo().join("deploy/make-certs.sh"))
        .arg(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run deploy/make-certs.sh");
    assert!(
        out.status.success(),
        "make-certs.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The compose file's TLS set-up, on this machine: certificates from deploy/make-certs.sh,
/// PostgreSQL with `ssl = on` and the postgres certificate, pgheal with the compose file's
/// settings (client TLS required, the upstream checked against the CA), psql verify-full to
/// pgheal: TLS on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_tls_setup_works_end_to_end() {
    let c = compose();
    let env: std::collections::HashMap<String, String> =
        environment(service(&c, "pgheal")).into_iter().collect();
    let dir = Dir::new("deploy-e2e");
    // The keys go to the users who read them here: PostgreSQL runs as `postgres`, pgheal as us.
    let pg_uid = std::process::Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let me = String::from_utf8_lossy(
        &std::process::Command::new("id")
            .arg("-u")
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_owned();
    make_certs(
        &dir.0,
        &[
            (
                "POSTGRES_UID",
                if pg_uid.is_empty() {
                    me.clone()
                } else {
                    pg_uid
                },
            ),
            ("PGHEAL_UID", me),
        ],
    );
    for f in compose_cert_files(&c) {
        assert!(
            dir.0.join(&f).exists(),
            "compose reads /certs/{f}, which make-certs.sh does not make"
        );
    }
    let pg = start_pg();
    let read = |f: &str| std::fs::read(dir.0.join(f)).expect("generated file");
    pg.write_data_file("server.crt", &read("postgres.crt"), 0o600)
        .unwrap();
    pg.write_data_file("server.key", &read("postgres.key"), 0o600)
        .unwrap();
    pg.write_data_file(
        "pg_hba.conf",
        b"local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        0o600,
    )
    .unwrap();
    common::admin(
        &pg,
        "ALTER SYSTEM SET ssl_cert_file = 'server.crt'; ALTER SYSTEM SET ssl_key_file = 'server.key'; ALTER SYSTEM SET ssl = on;",
    );
    pg.reload().unwrap();

    // pgheal as the compose file sets it up, with this machine's host, port and file paths.
    // The certificate names `postgres` (the compose service); here the server is 127.0.0.1,
    // so the chain is checked (verify-ca) and the name is checked by the certificate test.
    let certs = |v: &str| v.replace("/certs/", &format!("{}/", dir.0.display()));
    let upstream = Upstream::parse("PGHEAL_UPSTREAM", &env["PGHEAL_UPSTREAM"]).unwrap();
    assert_eq!(
        upstream.tls.sslmode.map(|m| m.as_str()),
        Some("verify-full")
    );
    let url = format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DB}?sslmode=verify-ca&sslrootcert={}",
        pg.port(),
        certs(upstream.tls.sslrootcert.as_deref().expect("sslrootcert"))
    );
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(url),
        client_tls_sslmode: Some(env["PGHEAL_CLIENT_TLS_SSLMODE"].clone()),
        client_tls_cert_file: Some(certs(&env["PGHEAL_CLIENT_TLS_CERT_FILE"])),
        client_tls_key_file: Some(certs(&env["PGHEAL_CLIENT_TLS_KEY_FILE"])),
        ..Default::default()
    };
    let p = start_proxy_with(FileConfig::default(), &args).await;
    let conninfo = |mode: &str| {
        format!(
            "host=localhost port={} user={USER} dbname={DB} sslmode={mode} sslrootcert={}",
            p.addr.port(),
            dir.0.join("ca.crt").display()
        )
    };
    let (ok, out) = psql(
        &conninfo("verify-full"),
        PASSWORD,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await;
    assert!(ok, "psql verify-full to pgheal: {out}");
    assert_eq!(out.trim(), "t", "pgheal's server connection is on TLS too");
    let (ok, out) = psql(&conninfo("disable"), PASSWORD, "SELECT 1").await;
    assert!(
        !ok && out.contains("pgheal requires TLS"),
        "a plain client is refused: {out}"
    );
    p.shutdown().await;
}
