//! A real image registry for the image tests: Debian's `docker-registry`
//! (the Distribution registry) on a loopback port, with TLS (a certificate
//! the local engine trusts through `/etc/docker/certs.d/<host>/ca.crt`)
//! and htpasswd accounts. It can be stopped and started again on the same
//! port with the same storage. Images are pushed with the docker CLI under
//! a private `DOCKER_CONFIG`, and every tag of the registry is removed from
//! the local engine again when it is dropped.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::free_port;

pub const USERNAME: &str = "puller";
pub const PASSWORD: &str = "registry-secret-7";

pub struct Registry {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    certs_dir: PathBuf,
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

impl Registry {
    /// A running registry, or `None` (the test skipped loudly) when the
    /// registry or htpasswd is not installed and `CI` is not set.
    pub fn start() -> Option<Registry> {
        if !have("docker-registry") || !have("htpasswd") {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but docker-registry or htpasswd is missing (apt-get install docker-registry apache2-utils)"
            );
            eprintln!("SKIPPED: docker-registry or htpasswd is not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let pair = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
            .expect("a registry certificate");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, pair.cert.pem()).unwrap();
        std::fs::write(&key, pair.key_pair.serialize_pem()).unwrap();
        let certs_dir = PathBuf::from("/etc/docker/certs.d").join(&host);
        std::fs::create_dir_all(&certs_dir).expect("create /etc/docker/certs.d/<host> (root)");
        std::fs::write(certs_dir.join("ca.crt"), pair.cert.pem()).unwrap();
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", USERNAME, PASSWORD])
            .output()
            .expect("run htpasswd");
        assert!(htpasswd.status.success());
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  tls:\n    certificate: {cert}\n    key: {key}\nauth:\n  htpasswd:\n    realm: raftvisor-tests\n    path: {htpasswd}\n",
            storage = dir.path().join("storage").display(),
            cert = cert.display(),
            key = key.display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut registry = Registry {
            dir,
            port,
            child: None,
            certs_dir,
        };
        registry.resume();
        registry.docker(
            &[
                "login",
                &registry.host(),
                "-u",
                USERNAME,
                "--password-stdin",
            ],
            Some(PASSWORD),
        );
        Some(registry)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Starts the registry (again) and waits until it accepts connections.
    pub fn resume(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the registry: pulls now fail with "connection refused".
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Manifest requests the registry answered so far (one per pull try).
    pub fn manifest_requests(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("/manifests/") && l.contains("HTTP/"))
            .count()
    }

    /// `docker` with this registry's private client config.
    pub fn docker(&self, args: &[&str], stdin: Option<&str>) -> String {
        run_docker(args, stdin, Some(&self.dir.path().join("docker-config")))
    }

    /// Pushes the local image `local` as `<host>/<target>` and removes that
    /// tag from the local engine again, so the engine has to pull it.
    pub fn push(&self, local: &str, target: &str) -> String {
        let remote = format!("{}/{target}", self.host());
        self.docker(&["tag", local, &remote], None);
        self.docker(&["push", &remote], None);
        self.docker(&["rmi", &remote], None);
        remote
    }

    /// A variant of `base` with a label of its own: another digest that
    /// runs the same program.
    pub fn variant(&self, base: &str, label: &str) -> String {
        let tag = format!("raftvisor-test-variant:{label}");
        self.docker(
            &["build", "-q", "-t", &tag, "-"],
            Some(&format!(
                "FROM {base}\nLABEL raftvisor.test.variant={label}\n"
            )),
        );
        tag
    }
}

/// Runs the docker CLI (with `config` as its `DOCKER_CONFIG` when given)
/// and answers its stdout; panics with its stderr when it fails.
pub fn run_docker(args: &[&str], stdin: Option<&str>, config: Option<&std::path::Path>) -> String {
    let mut command = Command::new("docker");
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(config) = config {
        command.env("DOCKER_CONFIG", config);
    }
    let mut child = command.spawn().expect("run docker");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.certs_dir);
        // Whatever the engine pulled from this registry.
        if let Ok(output) = Command::new("docker")
            .args([
                "images",
                "--digests",
                "--format",
                "{{.Repository}} {{.Tag}} {{.Digest}}",
            ])
            .output()
        {
            let prefix = format!("{}/", self.host());
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let [repository, tag, digest] = fields[..] else {
                    continue;
                };
                if !repository.starts_with(&prefix) {
                    continue;
                }
                if tag != "<none>" {
                    let _ = Command::new("docker")
                        .args(["rmi", &format!("{repository}:{tag}")])
                        .output();
                }
                if digest != "<none>" {
                    let _ = Command::new("docker")
                        .args(["rmi", &format!("{repository}@{digest}")])
                        .output();
                }
            }
        }
    }
}
