//! Where a node's published ports are reached: derived from its spec
//! alone, so DNS answers and instance addresses agree without asking any
//! engine. Pure, like the rest of the model.

use super::Node;

impl Node {
    /// The address clients use to reach published ports of this node: its
    /// `address` when set, else the host of its Docker endpoint
    /// (`127.0.0.1` for a local socket).
    pub fn published_address(&self) -> String {
        if let Some(address) = &self.spec.address {
            return address.clone();
        }
        let endpoint = &self.spec.docker_endpoint;
        let rest = endpoint.split_once("://").map_or("", |(_, rest)| rest);
        if endpoint.starts_with("unix://") || rest.is_empty() {
            return "127.0.0.1".into();
        }
        let host_port = rest.split('/').next().unwrap_or(rest);
        match host_port.rsplit_once(':') {
            Some((host, _)) => host.trim_matches(['[', ']']).to_string(),
            None => host_port.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::NodeSpec;
    use super::*;

    fn node(docker_endpoint: &str, address: Option<&str>) -> Node {
        let spec: NodeSpec =
            serde_json::from_value(serde_json::json!({ "docker_endpoint": docker_endpoint }))
                .unwrap();
        Node {
            name: "n1".into(),
            spec: NodeSpec {
                address: address.map(str::to_string),
                ..spec
            },
            state: super::super::NodeState::Ready,
            version: 1,
            create_index: 1,
        }
    }

    #[test]
    fn the_published_address_is_the_given_one_else_the_engine_host() {
        assert_eq!(
            node("tcp://10.0.0.5:2376", Some("192.0.2.7")).published_address(),
            "192.0.2.7"
        );
        assert_eq!(
            node("tcp://10.0.0.5:2376", None).published_address(),
            "10.0.0.5"
        );
        assert_eq!(
            node("tcp://[fd00::5]:2376", None).published_address(),
            "fd00::5"
        );
        assert_eq!(
            node("https://engine.example/v1", None).published_address(),
            "engine.example"
        );
        assert_eq!(
            node("unix:///var/run/docker.sock", None).published_address(),
            "127.0.0.1"
        );
    }
}
