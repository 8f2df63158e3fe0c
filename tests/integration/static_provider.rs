//! The `static` machine provider against the local Docker Engine:
//! provisioning a given machine checks that its engine answers and returns
//! the node to register; an engine that does not answer is reported.

use raftvisor::provider::{
    from_config, MachineRequest, MachineStatus, ProviderConfig, ProviderError,
};

use crate::docker_env::{docker, LOCAL_ENGINE};

#[tokio::test]
async fn static_provider_registers_a_reachable_engine() {
    if docker().await.is_none() {
        return;
    }
    let config = ProviderConfig::parse(&format!(
        r#"
        kind = "static"
        ping_timeout_ms = 500
        [[machines]]
        name = "local"
        docker_endpoint = "{LOCAL_ENGINE}"
        address = "127.0.0.1"
        region = "lab"
        zone = "a"
        labels = {{ disk = "ssd" }}
        capacity = {{ max_instances = 8 }}
        [[machines]]
        name = "dark"
        docker_endpoint = "tcp://127.0.0.1:1"
        "#
    ))
    .expect("config");
    let provider = from_config(&config).expect("provider");
    assert_eq!(provider.kind(), "static");

    let machine = provider
        .provision(&MachineRequest {
            name: "local".into(),
            ..MachineRequest::default()
        })
        .await
        .expect("the local engine answers");
    assert_eq!(machine.id, "local");
    assert_eq!(machine.node.provider, "static");
    assert_eq!(machine.node.docker_endpoint, LOCAL_ENGINE);
    assert_eq!(machine.node.capacity.max_instances, 8);
    assert_eq!(
        provider.status("local").await.unwrap(),
        MachineStatus::Running
    );
    provider.start("local").await.expect("already running");

    let err = provider
        .provision(&MachineRequest {
            name: "dark".into(),
            ..MachineRequest::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{err}");
    assert!(matches!(
        provider.status("dark").await.unwrap(),
        MachineStatus::Unknown(_)
    ));
    let err = provider.restart("local").await.unwrap_err();
    assert!(matches!(err, ProviderError::NotSupported { .. }), "{err}");
}
