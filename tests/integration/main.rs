//! raftvisor's integration tests: real replica processes on loopback (and
//! one replica in-process through `agent::run`, in `in_process.rs`),
//! driven through the public HTTP API and CLI. One binary; the shared
//! harness lives in `harness.rs`. The runtime and supervisor tests also use
//! the local Docker Engine and the images of `scripts/build-images.sh`.

mod api_contract;
mod arm_double;
mod auth;
mod azure_provider;
mod blue_green;
mod bootstrap;
mod cluster_ops;
mod consul_client;
mod controllers;
mod corruption;
mod crash_points;
mod dashboard;
mod dns;
mod docker_env;
mod docker_tls;
mod ecosystem;
mod file_modes;
mod format_upgrade;
mod harness;
mod harness_tls;
mod hooks;
mod images;
mod in_process;
mod ingress;
mod large_writes;
mod limits;
mod openapi;
mod partitions;
mod patroni;
mod peer_identity;
mod pipelines;
mod ports;
mod registry_env;
mod releases;
mod replication;
mod runtime;
mod scripts;
mod secrets;
mod static_provider;
mod supervisor;
mod templates;
mod tls;
mod topologies;
mod tps;
mod volumes;
mod watchdog;
