//! Reading the configuration file: TOML or PgBouncer's pgbouncer.ini (told apart by
//! [`detect_format`]), its `%include`s from the disk, `listen_addr` names resolved, the
//! console's `SET` values read as the last lines of its `[pgbouncer]` section; then
//! [`super::validate::build`] overlays the flags and checks every value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::cli::RunArgs;
use super::file::FileConfig;
use super::live::Override;
use super::validate::build;
use super::{ini, pgbouncer, Config, ConfigError};

/// The two file formats. Both load into the same [`FileConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Toml,
    /// PgBouncer's `pgbouncer.ini`, as it is.
    PgBouncerIni,
}

/// `.ini` / `.toml` by extension; otherwise a file with a `[pgbouncer]` section is a
/// pgbouncer.ini (a TOML file cannot have one: unknown tables are refused).
pub fn detect_format(path: &Path, text: &str) -> FileFormat {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("ini") => FileFormat::PgBouncerIni,
        Some(e) if e.eq_ignore_ascii_case("toml") => FileFormat::Toml,
        _ if text
            .lines()
            .any(|l| l.trim_start().starts_with("[pgbouncer]")) =>
        {
            FileFormat::PgBouncerIni
        }
        _ => FileFormat::Toml,
    }
}

/// Included files, from the disk.
struct DiskFiles;

impl ini::Files for DiskFiles {
    fn read(&mut self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn exists(&self, path: &Path) -> bool {
        path.is_file()
    }
}

fn resolve_host(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    Ok((host, port).to_socket_addrs()?.collect())
}

/// Reads a pgbouncer.ini (`text` is the contents of `path`) into a [`FileConfig`], reading its
/// `%include`s from the disk and resolving `listen_addr` names. `overrides` (the console's
/// `SET`) are read as if they were the last lines of its `[pgbouncer]` section.
pub fn load_pgbouncer_ini(
    path: &Path,
    text: &str,
    overrides: &[Override],
) -> Result<FileConfig, ConfigError> {
    let mut parsed = ini::parse(path, text, &mut DiskFiles)
        .map_err(|e| ConfigError::new("config", e.to_string()))?;
    parsed
        .entries
        .extend(overrides.iter().enumerate().map(|(i, o)| ini::Entry {
            section: "pgbouncer".to_owned(),
            key: o.key.to_owned(),
            value: o.value.clone(),
            at: ini::Location {
                file: PathBuf::from("SET"),
                line: i + 1,
            },
        }));
    pgbouncer::from_ini(&parsed, path, &resolve_host)
}

/// Read the file named by `args.config` (if any; TOML or pgbouncer.ini, see [`detect_format`])
/// and overlay the flags.
pub fn load(args: &RunArgs) -> Result<Config, ConfigError> {
    load_with(args, &[])
}

/// [`load`], with the console's `SET` values on top of the file (a pgbouncer.ini only).
pub fn load_with(args: &RunArgs, overrides: &[Override]) -> Result<Config, ConfigError> {
    let file = match &args.config {
        Some(path) => {
            let text = read(path)?;
            match detect_format(path, &text) {
                FileFormat::PgBouncerIni => load_pgbouncer_ini(path, &text, overrides)?,
                FileFormat::Toml => {
                    refuse_overrides(overrides)?;
                    toml::from_str::<FileConfig>(&text).map_err(|e| {
                        let key = e
                            .span()
                            .map(|s| text.get(s).unwrap_or("").to_owned())
                            .unwrap_or_default();
                        ConfigError::new(
                            if key.is_empty() {
                                "config".to_owned()
                            } else {
                                key
                            },
                            e.message().to_owned(),
                        )
                    })?
                }
            }
        }
        None => {
            refuse_overrides(overrides)?;
            FileConfig::default()
        }
    };
    build(file, args)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("config", format!("cannot read {}: {e}", path.display())))
}

fn refuse_overrides(overrides: &[Override]) -> Result<(), ConfigError> {
    match overrides.first() {
        None => Ok(()),
        Some(o) => Err(ConfigError::new(
            o.key,
            "SET needs a pgbouncer.ini configuration; change the TOML file and RELOAD instead",
        )),
    }
}

/// The `[pgbouncer]` keys a pgbouncer.ini sets (none for a TOML file or no file): a `SET`
/// value for one of them gives way to the file at the next reload.
pub fn pgbouncer_keys_in_file(args: &RunArgs) -> Result<Vec<&'static str>, ConfigError> {
    let Some(path) = &args.config else {
        return Ok(Vec::new());
    };
    let text = read(path)?;
    if detect_format(path, &text) != FileFormat::PgBouncerIni {
        return Ok(Vec::new());
    }
    let parsed = ini::parse(path, &text, &mut DiskFiles)
        .map_err(|e| ConfigError::new("config", e.to_string()))?;
    Ok(parsed
        .entries
        .iter()
        .filter(|e| e.section == "pgbouncer")
        .filter_map(|e| super::pgbouncer_keys::find(&e.key).map(|k| k.name))
        .collect())
}
