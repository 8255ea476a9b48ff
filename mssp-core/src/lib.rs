//! mssp's core, everything between a policy document and the kernel's maps, with no HTTP and
//! no API views: the policy model and its validation ([`policy`]), the compiler of prefix
//! lists and rules ([`compile`]), the publisher that makes a desired state live customer by
//! customer ([`dataplane`]), loading the embedded XDP program ([`loader`]), the pinned data
//! plane under `pin_dir` ([`pins`]) and the real program run over test frames
//! ([`simulate`]).

pub mod capacity;
pub mod compile;
pub mod dataplane;
pub mod loader;
pub mod observe;
pub mod pins;
pub mod policy;
pub mod probe;
pub mod simulate;
