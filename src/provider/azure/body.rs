//! Pure parts of the Azure provider: the cloud-init document that turns a
//! fresh Ubuntu VM into a Docker host whose API is served with TLS, and the
//! JSON body of the `PUT virtualMachines/{name}` request (size, image,
//! inline NIC on the configured subnet, SSH-only admin, cloud-init as
//! `customData`). No I/O here.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Value};

use super::AzureConfig;
use crate::provider::MachineRequest;

/// Where cloud-init puts the engine's TLS files on the VM.
pub const DOCKER_TLS_DIR: &str = "/etc/docker/tls";

/// The PEM texts the engine serves its API with.
#[derive(Clone, PartialEq, Eq)]
pub struct EngineTls {
    pub ca_cert: String,
    pub server_cert: String,
    pub server_key: String,
}

impl std::fmt::Debug for EngineTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineTls")
            .field("ca_cert", &format_args!("{} bytes", self.ca_cert.len()))
            .field(
                "server_cert",
                &format_args!("{} bytes", self.server_cert.len()),
            )
            .field("server_key", &format_args!("<redacted>"))
            .finish()
    }
}

/// A `#cloud-config` document that installs Docker, writes the engine's TLS
/// files and makes dockerd listen on the unix socket and on `0.0.0.0:port`
/// with `tlsverify` (clients need a certificate signed by the CA).
pub fn cloud_init(tls: &EngineTls, port: u16) -> String {
    let daemon = json!({
        "hosts": ["unix:///var/run/docker.sock", format!("tcp://0.0.0.0:{port}")],
        "tls": true,
        "tlsverify": true,
        "tlscacert": format!("{DOCKER_TLS_DIR}/ca.pem"),
        "tlscert": format!("{DOCKER_TLS_DIR}/server-cert.pem"),
        "tlskey": format!("{DOCKER_TLS_DIR}/server-key.pem"),
    });
    // dockerd refuses `hosts` in daemon.json next to `-H fd://` on its
    // command line: the drop-in starts it without.
    let dropin = "[Service]\nExecStart=\nExecStart=/usr/bin/dockerd --containerd=/run/containerd/containerd.sock\n";
    let mut out = String::from(
        "#cloud-config\npackage_update: true\npackages:\n  - docker.io\nwrite_files:\n",
    );
    let files: [(String, &str, &str); 5] = [
        (format!("{DOCKER_TLS_DIR}/ca.pem"), "0644", &tls.ca_cert),
        (
            format!("{DOCKER_TLS_DIR}/server-cert.pem"),
            "0644",
            &tls.server_cert,
        ),
        (
            format!("{DOCKER_TLS_DIR}/server-key.pem"),
            "0600",
            &tls.server_key,
        ),
        (
            "/etc/docker/daemon.json".to_string(),
            "0644",
            &daemon.to_string(),
        ),
        (
            "/etc/systemd/system/docker.service.d/raftvisor.conf".to_string(),
            "0644",
            dropin,
        ),
    ];
    for (path, mode, content) in files {
        out.push_str(&format!(
            "  - path: {path}\n    owner: root:root\n    permissions: \"{mode}\"\n    content: |\n"
        ));
        for line in content.trim_end().lines() {
            out.push_str("      ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(
        "runcmd:\n  - [systemctl, daemon-reload]\n  - [systemctl, enable, docker]\n  - [systemctl, restart, docker]\n",
    );
    out
}

/// The body of `PUT .../virtualMachines/{name}`.
pub fn vm_body(config: &AzureConfig, request: &MachineRequest, custom_data: &str) -> Value {
    let name = &request.name;
    let mut tags: BTreeMap<String, String> = config.tags.clone();
    tags.extend(request.tags.clone());
    tags.insert("raftvisor-machine".into(), name.clone());
    let image = &config.image;
    let mut body = json!({
        "location": config.location,
        "tags": tags,
        "properties": {
            "hardwareProfile": { "vmSize": config.vm_size },
            "storageProfile": {
                "imageReference": {
                    "publisher": image.publisher,
                    "offer": image.offer,
                    "sku": image.sku,
                    "version": image.version,
                },
                "osDisk": {
                    "name": format!("{name}-os"),
                    "createOption": "FromImage",
                    "deleteOption": "Delete",
                    "diskSizeGB": config.os_disk_size_gb,
                    "managedDisk": { "storageAccountType": config.os_disk_type },
                },
            },
            "osProfile": {
                "computerName": name,
                "adminUsername": config.admin_username,
                "customData": base64::engine::general_purpose::STANDARD.encode(custom_data),
                "linuxConfiguration": {
                    "disablePasswordAuthentication": true,
                    "ssh": {
                        "publicKeys": [{
                            "path": format!("/home/{}/.ssh/authorized_keys", config.admin_username),
                            "keyData": config.ssh_public_key.trim(),
                        }],
                    },
                },
            },
            "networkProfile": {
                "networkApiVersion": "2020-11-01",
                "networkInterfaceConfigurations": [{
                    "name": format!("{name}-nic"),
                    "properties": {
                        "primary": true,
                        "deleteOption": "Delete",
                        "ipConfigurations": [{
                            "name": "ipconfig1",
                            "properties": {
                                "primary": true,
                                "subnet": { "id": config.subnet_id },
                            },
                        }],
                    },
                }],
            },
        },
    });
    if let Some(zone) = request.zone.as_ref().or(config.zone.as_ref()) {
        body["zones"] = json!([zone]);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> EngineTls {
        EngineTls {
            ca_cert: "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n".into(),
            server_cert: "-----BEGIN CERTIFICATE-----\nSRV\n-----END CERTIFICATE-----".into(),
            server_key: "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n".into(),
        }
    }

    #[test]
    fn cloud_init_installs_docker_with_tls() {
        let doc = cloud_init(&tls(), 2376);
        assert!(doc.starts_with("#cloud-config\n"));
        assert!(doc.contains("  - docker.io\n"));
        assert!(doc.contains("\"tlsverify\":true"));
        assert!(doc.contains("tcp://0.0.0.0:2376"));
        assert!(doc.contains("  - path: /etc/docker/tls/server-key.pem\n    owner: root:root\n    permissions: \"0600\"\n    content: |\n      -----BEGIN PRIVATE KEY-----\n      KEY\n"));
        // Every line of a block is indented under its `content: |`.
        let mut in_block = false;
        for line in doc.lines() {
            if line.ends_with("content: |") {
                in_block = true;
            } else if in_block && !line.starts_with("      ") {
                in_block = false;
                assert!(
                    line.starts_with("  - ") || line == "runcmd:",
                    "stray line {line:?}"
                );
            }
        }
        assert!(doc.ends_with("  - [systemctl, restart, docker]\n"));
    }

    #[test]
    fn engine_tls_debug_hides_the_key() {
        let text = format!("{:?}", tls());
        assert!(!text.contains("KEY"), "{text}");
    }

    #[test]
    fn vm_body_has_inline_nic_image_and_custom_data() {
        let config = super::super::tests::config();
        let request = MachineRequest {
            name: "rv-node-1".into(),
            zone: Some("2".into()),
            tags: [("cluster".to_string(), "prod".to_string())].into(),
            ..MachineRequest::default()
        };
        let body = vm_body(&config, &request, "#cloud-config\n");
        let props = &body["properties"];
        assert_eq!(body["location"], "westeurope");
        assert_eq!(body["zones"], json!(["2"]));
        assert_eq!(body["tags"]["cluster"], "prod");
        assert_eq!(props["hardwareProfile"]["vmSize"], "Standard_B2s");
        assert_eq!(
            props["storageProfile"]["imageReference"]["offer"],
            "0001-com-ubuntu-server-jammy"
        );
        let nic = &props["networkProfile"]["networkInterfaceConfigurations"][0];
        assert_eq!(nic["name"], "rv-node-1-nic");
        assert_eq!(
            nic["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"],
            config.subnet_id.as_str()
        );
        let data = props["osProfile"]["customData"].as_str().unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap(),
            b"#cloud-config\n"
        );
        assert_eq!(
            props["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0]["path"],
            "/home/raftvisor/.ssh/authorized_keys"
        );
    }
}
