//! raftvisor-jepsen: a failure-injection harness for raftvisor in the
//! spirit of Jepsen. It runs five raftvisor managers as containers on a
//! network of their own (mutual TLS, API tokens), drives workloads through
//! the HTTP API and the Docker Engine (KV registers, a set, supervised echo
//! services) while a nemesis partitions, kills, pauses, delays, reconfigures
//! and corrupts, heals everything, and then decides with checkers
//! (linearizability, set, supervisor, DNS, liveness, replica agreement).
//! Every run is seeded and writes its history, verdict, summary and a
//! timeline picture.

pub mod api;
pub mod checker;
pub mod cluster;
pub mod containers;
pub mod engine_proxy;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod observer;
pub mod report;
pub mod run;
pub mod suite;
pub mod workloads;
