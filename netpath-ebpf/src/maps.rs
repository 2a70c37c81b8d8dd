use aya_ebpf::{
    btf_maps::{HashMap, PerCpuArray},
    macros::btf_map,
};
use netpath_common::{Counters, Endpoint, EndpointKey, MAX_ENDPOINTS, PROGRAM_COUNT};

#[btf_map]
pub static ENDPOINTS: HashMap<EndpointKey, Endpoint, MAX_ENDPOINTS> = HashMap::new();

#[btf_map]
pub static STATS: PerCpuArray<Counters, PROGRAM_COUNT> = PerCpuArray::new();
