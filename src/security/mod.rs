//! Secure bootstrap (stage 8, beside health and catalog): the cluster CA,
//! gossip keys and join tokens of `supervisor cluster init`; the join
//! endpoint a CA holder serves over TLS and the client a new node uses with
//! its join token (the CA pinned by the token's hash, as kubeadm's
//! `--discovery-token-ca-cert-hash`); ACL bootstrap; certificate renewal.
//!
//! Files: `<config>/cluster/` (CA holders, 0700) and `<config>/security/`
//! (every secured node), names in `paths`. The role loader reads
//! `security/` into `role::security::NodeMaterial`; this module writes both.

pub mod acl;
pub mod ca;
pub mod join_client;
pub mod join_server;
pub mod names;
pub mod pin;
pub mod renew;
pub mod store;
pub mod sync;
pub mod token;
pub mod wire;
