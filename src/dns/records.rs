//! The cluster's DNS zone computed from the replicated state, pure: a name
//! and a type in, the records (or NXDOMAIN) out. The server turns these
//! into wire records; tests call it directly.
//!
//! Names (all under the configured domain, case-insensitive):
//! - `<service>.<namespace>.svc` — A/AAAA of healthy running instances;
//! - `_<port>._<proto>.<service>.<namespace>.svc` — SRV per healthy
//!   instance: the port's weight, the published host port, target
//!   `<node>.node.<domain>` (its address in the additional section);
//! - an `external` service's name — its addresses, or a CNAME to its host name;
//! - `<release>.release` and `_<port>._<proto>.<release>.release` — as the
//!   names of the release's entry service in its live environment;
//! - `<node>.node` — the node's address; `leader.managers` — the leader's;
//! - the apex — SOA and NS.
//!   A name that does not exist is NXDOMAIN; an existing name without
//!   records of the asked type is an empty NOERROR answer (both with the SOA).

use std::net::IpAddr;

use crate::state::{InstanceState, Protocol, Service, ServiceKind, State};

/// Record data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Addr(IpAddr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Ns(String),
    Cname(String),
    Soa {
        mname: String,
        rname: String,
        serial: u32,
    },
}

/// One record; `name` is absolute, lowercase, without the final dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub name: String,
    pub data: Data,
}

/// The outcome of a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    /// The name is inside the zone but does not exist.
    pub nxdomain: bool,
    /// The name is outside the zone.
    pub out_of_zone: bool,
    pub answers: Vec<Rec>,
    pub additionals: Vec<Rec>,
    /// The SOA to put in the authority section of a negative answer.
    pub soa: Option<Rec>,
}

/// Which kind of records a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    A,
    Aaaa,
    Srv,
    Ns,
    Soa,
    Any,
    Other,
}

/// The zone as one replica sees it.
pub struct Zone<'a> {
    /// Lowercase, without leading or trailing dots, e.g. `cluster.local`.
    pub domain: &'a str,
    pub state: &'a State,
    /// Address of the current leader's API (for `leader.managers`).
    pub leader: Option<IpAddr>,
    /// Address of this replica's DNS server (for `ns.<domain>`).
    pub this_server: IpAddr,
}

impl Zone<'_> {
    fn soa(&self) -> Rec {
        Rec {
            name: self.domain.to_string(),
            data: Data::Soa {
                mname: format!("ns.{}", self.domain),
                rname: format!("hostmaster.{}", self.domain),
                serial: (self.state.applied_index & 0xffff_ffff) as u32,
            },
        }
    }

    /// Answers `name` (any case, with or without the final dot) for `want`.
    pub fn lookup(&self, name: &str, want: Want) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let Some(relative) = relative_name(&name, self.domain) else {
            return Answer {
                out_of_zone: true,
                ..Answer::default()
            };
        };
        let labels: Vec<&str> = if relative.is_empty() {
            Vec::new()
        } else {
            relative.split('.').collect()
        };
        let found = match labels.as_slice() {
            [] => Some(self.apex(&name, want)),
            ["ns"] => Some(self.addresses(&name, want, [self.this_server].into_iter())),
            ["leader", "managers"] => self
                .leader
                .map(|ip| self.addresses(&name, want, [ip].into_iter())),
            [node, "node"] => self.state.nodes.get(*node).map(|n| {
                let ips = n.published_address().parse::<IpAddr>().ok();
                self.addresses(&name, want, ips.into_iter())
            }),
            [service, namespace, "svc"] => self.service_addresses(&name, namespace, service, want),
            [release, "release"] => self.release_entry(release).and_then(|(namespace, entry)| {
                self.service_addresses(&name, namespace, entry, want)
            }),
            [port, proto, release, "release"]
                if port.starts_with('_') && proto.starts_with('_') =>
            {
                self.release_entry(release).and_then(|(namespace, entry)| {
                    self.service_srv(&name, namespace, entry, &port[1..], &proto[1..], want)
                })
            }
            [port, proto, service, namespace, "svc"]
                if port.starts_with('_') && proto.starts_with('_') =>
            {
                self.service_srv(&name, namespace, service, &port[1..], &proto[1..], want)
            }
            _ => None,
        };
        match found {
            Some(mut answer) => {
                if answer.answers.is_empty() {
                    answer.soa = Some(self.soa());
                }
                answer
            }
            None => Answer {
                nxdomain: true,
                soa: Some(self.soa()),
                ..Answer::default()
            },
        }
    }

    fn apex(&self, name: &str, want: Want) -> Answer {
        let mut answer = Answer::default();
        if matches!(want, Want::Soa | Want::Any) {
            answer.answers.push(self.soa());
        }
        if matches!(want, Want::Ns | Want::Any) {
            answer.answers.push(Rec {
                name: name.to_string(),
                data: Data::Ns(format!("ns.{}", self.domain)),
            });
            answer.additionals.push(Rec {
                name: format!("ns.{}", self.domain),
                data: Data::Addr(self.this_server),
            });
        }
        answer
    }

    fn addresses(&self, name: &str, want: Want, ips: impl Iterator<Item = IpAddr>) -> Answer {
        let answers = ips
            .filter(|ip| {
                matches!(
                    (want, ip),
                    (Want::A | Want::Any, IpAddr::V4(_)) | (Want::Aaaa | Want::Any, IpAddr::V6(_))
                )
            })
            .map(|ip| Rec {
                name: name.to_string(),
                data: Data::Addr(ip),
            })
            .collect();
        Answer {
            answers,
            ..Answer::default()
        }
    }

    /// The live namespace and the entry service of release `name`.
    fn release_entry(&self, name: &str) -> Option<(&str, &str)> {
        let release = self.state.releases.releases.get(name)?;
        Some((release.live_namespace(), release.entry.as_str()))
    }

    fn service(&self, namespace: &str, service: &str) -> Option<&Service> {
        self.state
            .services
            .get(&(namespace.to_string(), service.to_string()))
    }

    fn service_addresses(
        &self,
        name: &str,
        namespace: &str,
        service: &str,
        want: Want,
    ) -> Option<Answer> {
        let svc = self.service(namespace, service)?;
        if svc.spec.kind == ServiceKind::External {
            if let Some(hostname) = &svc.spec.hostname {
                return Some(Answer {
                    answers: vec![Rec {
                        name: name.to_string(),
                        data: Data::Cname(hostname.trim_end_matches('.').to_ascii_lowercase()),
                    }],
                    ..Answer::default()
                });
            }
        }
        let mut ips: Vec<IpAddr> = if svc.spec.kind == ServiceKind::External {
            svc.spec
                .addresses
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect()
        } else {
            self.state
                .service_instances(namespace, service)
                .into_iter()
                .filter(|i| i.state == InstanceState::Running)
                .filter_map(|i| i.address.as_deref()?.parse().ok())
                .collect()
        };
        ips.sort();
        ips.dedup();
        Some(self.addresses(name, want, ips.into_iter()))
    }

    fn service_srv(
        &self,
        name: &str,
        namespace: &str,
        service: &str,
        port: &str,
        proto: &str,
        want: Want,
    ) -> Option<Answer> {
        let svc = self.service(namespace, service)?;
        let spec = svc
            .spec
            .ports
            .iter()
            .find(|p| p.name == port && p.protocol.as_str() == proto)?;
        let mut answer = Answer::default();
        if !matches!(want, Want::Srv | Want::Any) {
            return Some(answer);
        }
        // While canaries wait, they answer with the weight the spec gives
        // them; the template tells a canary (the newest version) apart.
        let canary_weight = svc.spec.update.canary_weight;
        let canary_template = (canary_weight > 0
            && self.state.history.canary_held(namespace, service))
        .then(|| self.state.template_of(svc));
        for instance in self.state.service_instances(namespace, service) {
            if instance.state != InstanceState::Running {
                continue;
            }
            let (Some(node), Some(published)) = (
                instance.node.as_deref(),
                instance
                    .ports
                    .iter()
                    .find(|p| p.name == port && p.protocol == spec.protocol),
            ) else {
                continue;
            };
            let target = format!("{node}.node.{}", self.domain);
            answer.answers.push(Rec {
                name: name.to_string(),
                data: Data::Srv {
                    priority: 0,
                    weight: match &canary_template {
                        Some(template) if instance.template == *template => canary_weight,
                        _ => spec.weight,
                    },
                    port: published.host_port,
                    target: target.clone(),
                },
            });
            if let Some(ip) = instance
                .address
                .as_deref()
                .and_then(|a| a.parse::<IpAddr>().ok())
            {
                let glue = Rec {
                    name: target,
                    data: Data::Addr(ip),
                };
                if !answer.additionals.contains(&glue) {
                    answer.additionals.push(glue);
                }
            }
        }
        Some(answer)
    }
}

/// `name` relative to `domain` ("" for the apex), or `None` outside it.
/// Whether `name` (any case, with or without the final dot) is `domain`
/// or below it.
pub fn in_zone(name: &str, domain: &str) -> bool {
    relative_name(&name.trim_end_matches('.').to_ascii_lowercase(), domain).is_some()
}

fn relative_name<'a>(name: &'a str, domain: &str) -> Option<&'a str> {
    if name == domain {
        return Some("");
    }
    name.strip_suffix(domain)?.strip_suffix('.')
}

/// Keeps the protocol names in one place for SRV owner names.
pub fn srv_owner(
    port: &str,
    protocol: Protocol,
    service: &str,
    namespace: &str,
    domain: &str,
) -> String {
    format!(
        "_{port}._{}.{service}.{namespace}.svc.{domain}",
        protocol.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, Instance, InstanceStatus, PublishedPort, Request, RequestId};

    fn state() -> State {
        let mut state = State::default();
        let mut index = 0;
        let mut apply = |state: &mut State, command: Command| {
            index += 1;
            let outcome = state
                .apply(
                    index,
                    &Request {
                        id: RequestId(index as u128),
                        time_ms: 0,
                        command,
                    },
                )
                .outcome;
            assert!(
                !matches!(outcome, crate::state::Outcome::Rejected(_)),
                "{outcome:?}"
            );
        };
        apply(
            &mut state,
            Command::PutService {
                namespace: "demo".into(),
                name: "echo".into(),
                spec: serde_json::from_value(serde_json::json!({"image": "e", "replicas": 2, "ports": [{"name": "http", "container_port": 8080, "weight": 7}]})).unwrap(),
                expected_version: None,
            },
        );
        apply(
            &mut state,
            Command::PutNode {
                name: "n1".into(),
                spec: serde_json::from_value(
                    serde_json::json!({"docker_endpoint": "tcp://10.1.2.3:2375"}),
                )
                .unwrap(),
                expected_version: None,
            },
        );
        for slot in 0..2 {
            apply(
                &mut state,
                Command::PlaceSlot {
                    namespace: "demo".into(),
                    service: "echo".into(),
                    slot,
                    node: "n1".into(),
                },
            );
        }
        let running: Instance = state.instances["demo.echo.0"].clone();
        apply(
            &mut state,
            Command::SetInstanceStatus {
                id: running.id.clone(),
                generation: running.generation,
                status: InstanceStatus {
                    state: InstanceState::Running,
                    container_id: Some("c".into()),
                    restarts: 0,
                    last_exit: None,
                    address: Some("10.1.2.3".into()),
                    ports: vec![PublishedPort {
                        name: "http".into(),
                        container_port: 8080,
                        host_port: 32001,
                        protocol: Protocol::Tcp,
                    }],
                    spec_version: 1,
                    restart_epoch: 0,
                },
            },
        );
        state
    }

    fn zone(state: &State) -> Zone<'_> {
        Zone {
            domain: "cluster.local",
            state,
            leader: Some("127.0.0.2".parse().unwrap()),
            this_server: "127.0.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn service_addresses_are_those_of_healthy_running_instances() {
        let state = state();
        let answer = zone(&state).lookup("Echo.Demo.svc.Cluster.Local.", Want::A);
        assert_eq!(
            answer.answers,
            vec![Rec {
                name: "echo.demo.svc.cluster.local".into(),
                data: Data::Addr("10.1.2.3".parse().unwrap())
            }]
        );
        assert!(!answer.nxdomain);
        // No AAAA: an empty NOERROR with the SOA.
        let empty = zone(&state).lookup("echo.demo.svc.cluster.local", Want::Aaaa);
        assert!(empty.answers.is_empty() && !empty.nxdomain && empty.soa.is_some());
    }

    #[test]
    fn srv_records_carry_weight_host_port_and_a_resolvable_target() {
        let state = state();
        let owner = srv_owner("http", Protocol::Tcp, "echo", "demo", "cluster.local");
        let answer = zone(&state).lookup(&owner, Want::Srv);
        assert_eq!(
            answer.answers,
            vec![Rec {
                name: owner.clone(),
                data: Data::Srv {
                    priority: 0,
                    weight: 7,
                    port: 32001,
                    target: "n1.node.cluster.local".into()
                }
            }]
        );
        assert_eq!(answer.additionals[0].name, "n1.node.cluster.local");
        let node = zone(&state).lookup("n1.node.cluster.local", Want::A);
        assert_eq!(
            node.answers[0].data,
            Data::Addr("10.1.2.3".parse().unwrap())
        );
        assert!(
            zone(&state)
                .lookup("_grpc._tcp.echo.demo.svc.cluster.local", Want::Srv)
                .nxdomain
        );
    }

    #[test]
    fn only_running_instances_are_in_dns() {
        let mut state = state();
        // Slot 1 exists but is pending: absent. Mark slot 0 unhealthy: absent too.
        let owner = srv_owner("http", Protocol::Tcp, "echo", "demo", "cluster.local");
        assert_eq!(zone(&state).lookup(&owner, Want::Srv).answers.len(), 1);
        let running = state.instances["demo.echo.0"].clone();
        let mut status = InstanceStatus {
            state: InstanceState::Unhealthy,
            container_id: running.container_id.clone(),
            restarts: 1,
            last_exit: None,
            address: running.address.clone(),
            ports: running.ports.clone(),
            spec_version: running.spec_version,
            restart_epoch: 0,
        };
        let apply = |state: &mut State, index: u64, status: InstanceStatus| {
            state.apply(
                index,
                &Request {
                    id: RequestId(index as u128),
                    time_ms: 0,
                    command: Command::SetInstanceStatus {
                        id: running.id.clone(),
                        generation: running.generation,
                        status,
                    },
                },
            );
        };
        apply(&mut state, 200, status.clone());
        let answer = zone(&state).lookup(&owner, Want::Srv);
        assert!(answer.answers.is_empty() && !answer.nxdomain, "{answer:?}");
        assert!(zone(&state)
            .lookup("echo.demo.svc.cluster.local", Want::A)
            .answers
            .is_empty());
        status.state = InstanceState::Running;
        apply(&mut state, 201, status);
        assert_eq!(zone(&state).lookup(&owner, Want::Srv).answers.len(), 1);
    }

    #[test]
    fn external_services_answer_their_addresses_or_a_cname() {
        let mut state = state();
        for (index, (name, spec)) in [
            ("db", serde_json::json!({"kind": "external", "addresses": ["10.9.9.9", "10.9.9.8", "fd00::1"]})),
            ("mail", serde_json::json!({"kind": "external", "hostname": "Mail.Example.org"})),
        ]
        .into_iter()
        .enumerate()
        {
            let outcome = state
                .apply(
                    100 + index as u64,
                    &Request {
                        id: RequestId(100 + index as u128),
                        time_ms: 0,
                        command: Command::PutService {
                            namespace: "ext".into(),
                            name: name.into(),
                            spec: serde_json::from_value(spec).unwrap(),
                            expected_version: None,
                        },
                    },
                )
                .outcome;
            assert!(matches!(outcome, crate::state::Outcome::Service(_)), "{outcome:?}");
        }
        let a = zone(&state).lookup("db.ext.svc.cluster.local", Want::A);
        let ips: Vec<Data> = a.answers.into_iter().map(|r| r.data).collect();
        assert_eq!(
            ips,
            vec![
                Data::Addr("10.9.9.8".parse().unwrap()),
                Data::Addr("10.9.9.9".parse().unwrap())
            ]
        );
        let aaaa = zone(&state).lookup("db.ext.svc.cluster.local", Want::Aaaa);
        assert_eq!(aaaa.answers.len(), 1);
        let cname = zone(&state).lookup("mail.ext.svc.cluster.local", Want::A);
        assert_eq!(
            cname.answers[0].data,
            Data::Cname("mail.example.org".into())
        );
    }

    #[test]
    fn unknown_names_are_nxdomain_and_outside_names_are_not_ours() {
        let state = state();
        for name in [
            "nope.demo.svc.cluster.local",
            "n9.node.cluster.local",
            "a.b.c.d.e.f.cluster.local",
        ] {
            let answer = zone(&state).lookup(name, Want::A);
            assert!(answer.nxdomain && answer.soa.is_some(), "{name}");
        }
        assert!(zone(&state).lookup("example.org", Want::A).out_of_zone);
        assert!(zone(&state).lookup("notcluster.local", Want::A).out_of_zone);
        let leader = zone(&state).lookup("leader.managers.cluster.local", Want::A);
        assert_eq!(
            leader.answers[0].data,
            Data::Addr("127.0.0.2".parse().unwrap())
        );
        let apex = zone(&state).lookup("cluster.local", Want::Soa);
        assert!(matches!(apex.answers[0].data, Data::Soa { .. }));
    }

    #[test]
    fn a_release_name_answers_with_the_live_environment_s_entry() {
        use crate::state::releases::{Color, SwitchTarget};
        let mut state = state();
        let apply = |state: &mut State, index: u64, command: Command| {
            state
                .apply(
                    index,
                    &Request {
                        id: RequestId(1000 + index as u128),
                        time_ms: 0,
                        command,
                    },
                )
                .outcome
        };
        let created = apply(
            &mut state,
            100,
            Command::CreateRelease {
                name: "shop".into(),
                entry: "echo".into(),
                blue: "demo".into(),
                green: "demo2".into(),
                live: Color::Blue,
            },
        );
        assert_eq!(created, crate::state::Outcome::Done);
        let a = zone(&state).lookup("Shop.release.cluster.local.", Want::A);
        assert_eq!(a.answers.len(), 1, "{a:?}");
        assert_eq!(a.answers[0].name, "shop.release.cluster.local");
        assert_eq!(a.answers[0].data, Data::Addr("10.1.2.3".parse().unwrap()));
        let srv = zone(&state).lookup("_http._tcp.shop.release.cluster.local", Want::Srv);
        assert!(
            matches!(
                srv.answers[0].data,
                Data::Srv {
                    port: 32001,
                    weight: 7,
                    ..
                }
            ),
            "{srv:?}"
        );
        // Green runs nothing: the switch is refused and the answer stays.
        let switch = |force| Command::SwitchRelease {
            name: "shop".into(),
            target: SwitchTarget::Idle,
            force,
            expected_version: None,
        };
        assert!(matches!(
            apply(&mut state, 101, switch(false)),
            crate::state::Outcome::Refused { ref code, .. } if code == "not_ready"
        ));
        assert_eq!(
            zone(&state).lookup("shop.release.cluster.local", Want::A),
            a
        );
        // Forced, it answers as green's entry: a name that does not exist there.
        apply(&mut state, 102, switch(true));
        assert!(
            zone(&state)
                .lookup("shop.release.cluster.local", Want::A)
                .nxdomain
        );
        assert!(
            zone(&state)
                .lookup("other.release.cluster.local", Want::A)
                .nxdomain
        );
    }
}
