//! Generated protobuf types and tonic services, plus the encoded descriptor set that
//! reflection and the HTTP gateway read.

/// `tally.v1`: the public API.
pub mod tally_v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tally.v1");
}

/// The descriptor set of `proto/`, with imports, as protox encoded it. Custom options such as
/// `google.api.http` survive only in these original bytes.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tally_descriptor.bin"));

/// Response metadata of every call that moves money: how many transaction attempts the
/// transfer (or the batch) took (1 = no retry). A wire name clients read, so it lives with the
/// wire format.
pub const ATTEMPTS_HEADER: &str = "tally-attempts";

/// The fully qualified names of the services tally itself implements.
pub const TALLY_SERVICES: &[&str] = &[
    "tally.v1.UserService",
    "tally.v1.SessionService",
    "tally.v1.RoleService",
    "tally.v1.AccountService",
    "tally.v1.TransferService",
    "tally.v1.AuditService",
];

/// The gRPC path (`/tally.v1.Service/Method`) of every method of tally's own services, from the
/// descriptor set: what the tables that must name every method are checked against.
pub fn tally_method_paths() -> Vec<String> {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
        .expect("the embedded descriptor set decodes");
    set.file
        .iter()
        .filter(|f| f.package() == "tally.v1")
        .flat_map(|file| {
            file.service.iter().flat_map(|service| {
                service
                    .method
                    .iter()
                    .map(move |m| format!("/tally.v1.{}/{}", service.name(), m.name()))
            })
        })
        .collect()
}
