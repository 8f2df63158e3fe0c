//! The `azure` machine provider's real client code (azure_identity's
//! client-secret credential, azure_mgmt_compute's requests, our polling of
//! long-running operations) against the local ARM test double
//! (`arm_double.rs`): the whole lifecycle, a failing operation, an
//! operation that never ends, and the token being required.

use std::time::{Duration, Instant};

use raftvisor::provider::azure::{AzureConfig, AzureProvider, Credentials};
use raftvisor::provider::{
    MachineProvider, MachineRequest, MachineStatus, ProviderConfig, ProviderError,
};

use crate::arm_double::{ArmDouble, CLIENT_ID, CLIENT_SECRET, TENANT};

pub const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
pub const RESOURCE_GROUP: &str = "raftvisor-prod";

/// The documented example configuration, pointed at the double, with the
/// secret and the engine's TLS files in `dir`.
pub(crate) fn config(double: &ArmDouble, dir: &std::path::Path, secret: &str) -> AzureConfig {
    let ProviderConfig::Azure(mut config) =
        ProviderConfig::parse(include_str!("../../cluster-config/azure.example.toml"))
            .expect("example configuration")
    else {
        panic!("the example is not an azure configuration");
    };
    assert_eq!(config.subscription_id, SUBSCRIPTION);
    assert_eq!(config.resource_group, RESOURCE_GROUP);
    config.endpoints.resource_manager = double.url.clone();
    config.endpoints.authority_host = Some(double.url.clone());
    config.credentials.tenant_id = Some(TENANT.into());
    config.credentials.client_id = Some(CLIENT_ID.into());
    let secret_file = dir.join("client-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    config.credentials.client_secret_file = Some(secret_file);
    for (name, path) in [
        ("ca.pem", &mut config.docker.server_ca_cert),
        ("engine-cert.pem", &mut config.docker.server_cert),
        ("engine-key.pem", &mut config.docker.server_key),
    ] {
        let file = dir.join(name);
        std::fs::write(
            &file,
            format!("-----BEGIN TEST {name}-----\nAAAA\n-----END TEST-----\n"),
        )
        .unwrap();
        *path = file;
    }
    // The managers' client files for the engines: bootstrap copies them
    // into the managers' docker_tls_dir, so they must exist.
    for (name, path) in [
        ("client-ca.pem", &mut config.docker.client.ca_cert),
        ("client-cert.pem", &mut config.docker.client.cert),
        ("client-key.pem", &mut config.docker.client.key),
    ] {
        let file = dir.join(name);
        std::fs::write(
            &file,
            format!("-----BEGIN TEST {name}-----\nAAAA\n-----END TEST-----\n"),
        )
        .unwrap();
        *path = file.display().to_string();
    }
    config.timeouts.poll_interval_ms = 20;
    config.timeouts.operation_secs = 10;
    config.timeouts.create_secs = 10;
    config.timeouts.request_secs = 5;
    *config
}

fn provider(config: &AzureConfig) -> AzureProvider {
    // Only the environment is left out: the test must not depend on AZURE_*.
    let credentials = Credentials::resolve(config, |_| None).expect("credentials");
    AzureProvider::new(config, &credentials, azure_core::new_http_client()).expect("provider")
}

fn request(name: &str) -> MachineRequest {
    MachineRequest {
        name: name.into(),
        labels: [("role".to_string(), "worker".to_string())].into(),
        tags: [("raftvisor-cluster".to_string(), "test".to_string())].into(),
        ..MachineRequest::default()
    }
}

#[tokio::test]
async fn azure_provider_runs_the_whole_lifecycle_against_the_arm_double() {
    let double = ArmDouble::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let provider = provider(&config(&double, dir.path(), CLIENT_SECRET));

    let machine = provider
        .provision(&request("rv-az-1"))
        .await
        .expect("create");
    assert_eq!(machine.id, "rv-az-1");
    assert_eq!(machine.node.provider, "azure");
    assert_eq!(
        machine.node.docker_endpoint,
        "https://rv-az-1.internal.cloudapp.net:2376"
    );
    assert_eq!(machine.node.address.as_deref(), Some("10.0.0.4"));
    assert_eq!(machine.node.zone.as_deref(), Some("1"));
    assert_eq!(
        machine.node.labels.get("role").map(String::as_str),
        Some("worker")
    );
    assert_eq!(
        machine.node.labels.get("pool").map(String::as_str),
        Some("azure")
    );
    assert!(machine.node.docker_tls.is_some());
    let vm = double.vm("rv-az-1").expect("the double holds the VM");
    assert_eq!(vm.body["tags"]["raftvisor-cluster"], "test");
    assert_eq!(
        provider.status("rv-az-1").await.unwrap(),
        MachineStatus::Running
    );

    provider.deallocate("rv-az-1").await.expect("deallocate");
    assert_eq!(
        provider.status("rv-az-1").await.unwrap(),
        MachineStatus::Deallocated
    );
    provider.start("rv-az-1").await.expect("start");
    assert_eq!(
        provider.status("rv-az-1").await.unwrap(),
        MachineStatus::Running
    );
    provider.restart("rv-az-1").await.expect("restart");
    assert_eq!(
        provider.status("rv-az-1").await.unwrap(),
        MachineStatus::Running
    );

    provider.delete("rv-az-1").await.expect("delete");
    assert_eq!(
        provider.status("rv-az-1").await.unwrap(),
        MachineStatus::Missing
    );
    // Deleting what is gone is not an error.
    provider.delete("rv-az-1").await.expect("delete again");

    // Every operation was polled several times before it succeeded.
    let finished = double.finished();
    let kinds: Vec<&str> = finished.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["create", "deallocate", "start", "restart", "delete"]
    );
    assert!(
        finished.iter().all(|(_, polls)| *polls == 4),
        "{finished:?}"
    );
    assert_eq!(double.violations(), Vec::<String>::new());
    // One token, obtained from the double by azure_identity and reused.
    assert_eq!(double.tokens_issued(), 1);
}

#[tokio::test]
async fn azure_provider_reports_a_failing_long_running_operation() {
    let double = ArmDouble::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let provider = provider(&config(&double, dir.path(), CLIENT_SECRET));
    double.fail_next("create");
    let err = provider.provision(&request("rv-az-2")).await.unwrap_err();
    match &err {
        ProviderError::OperationFailed {
            operation,
            machine,
            message,
        } => {
            assert_eq!(*operation, "create");
            assert_eq!(machine, "rv-az-2");
            assert!(message.starts_with("AllocationFailed:"), "{message}");
        }
        other => panic!("expected a failed operation, got {other:?}"),
    }
    assert!(!err.to_string().contains('\n'));
    double.fail_next("start");
    let err = provider.start("rv-az-2").await.unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::OperationFailed {
                operation: "start",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(double.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn azure_provider_gives_up_on_an_operation_that_never_ends() {
    let double = ArmDouble::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&double, dir.path(), CLIENT_SECRET);
    config.timeouts.operation_secs = 1;
    let provider = provider(&config);
    provider
        .provision(&request("rv-az-3"))
        .await
        .expect("create");
    double.hang_next("restart");
    let started = Instant::now();
    let err = provider.restart("rv-az-3").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        err,
        ProviderError::Timeout {
            operation: "restart",
            machine: "rv-az-3".into(),
            timeout: Duration::from_secs(1),
        }
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(
        err.to_string(),
        "restart of \"rv-az-3\" did not finish within 1s"
    );
}

#[tokio::test]
async fn azure_provider_needs_the_token_the_double_issued() {
    let double = ArmDouble::start(1).await;
    let dir = tempfile::tempdir().unwrap();

    // A wrong client secret: no token, so no VM call at all.
    let provider = provider(&config(&double, dir.path(), "not-the-secret"));
    let err = provider.status("rv-az-4").await.unwrap_err();
    assert!(matches!(err, ProviderError::Credentials(_)), "{err:?}");
    assert!(!err.to_string().contains("not-the-secret"), "{err}");
    assert_eq!(double.tokens_issued(), 0);
    assert!(double.state.lock().unwrap().requests.is_empty());

    // ARM calls without the issued token are refused.
    let url = format!(
        "{}/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.Compute/virtualMachines/rv-az-4/instanceView?api-version=2024-07-01",
        double.url
    );
    let http = reqwest::Client::new();
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let forged = http.get(&url).bearer_auth("forged").send().await.unwrap();
    assert_eq!(forged.status(), 401);
    let issued = http
        .get(&url)
        .bearer_auth(double.token())
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), 404, "the VM does not exist");

    // The right secret: the provider's calls carry the token and pass.
    let provider = self::provider(&config(&double, dir.path(), CLIENT_SECRET));
    assert_eq!(
        provider.status("rv-az-4").await.unwrap(),
        MachineStatus::Missing
    );
    assert_eq!(double.tokens_issued(), 1);
}
