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

/// The request header in which a gRPC client sends its deadline (the gRPC over HTTP/2 spec's
/// `Timeout`); JSON callers may send it too.
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// The deadline a request's `grpc-timeout` asks for (`<at most 8 digits><H|M|S|m|u|n>`), if it
/// carries a valid one.
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let value = headers.get(GRPC_TIMEOUT_HEADER)?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3_600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `timeout` as a `grpc-timeout` value: the finest unit whose count fits the spec's 8 digits,
/// rounded down (a deadline passed on must not grow).
pub fn grpc_timeout_value(timeout: std::time::Duration) -> http::HeaderValue {
    const DIGITS_MAX: u128 = 99_999_999;
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let nanos = timeout.as_nanos();
    let (count, unit) = units
        .iter()
        .map(|&(size, unit)| (nanos / size, unit))
        .find(|&(count, _)| count <= DIGITS_MAX)
        .unwrap_or((DIGITS_MAX, 'H'));
    http::HeaderValue::from_str(&format!("{count}{unit}"))
        .unwrap_or_else(|_| http::HeaderValue::from_static("0n"))
}

/// The fully qualified names of the services tally itself implements.
pub const TALLY_SERVICES: &[&str] = &[
    "tally.v1.UserService",
    "tally.v1.SessionService",
    "tally.v1.RoleService",
    "tally.v1.AccountService",
    "tally.v1.TransferService",
    "tally.v1.AuditService",
    "tally.v1.ExchangeService",
    "tally.v1.EventService",
    "tally.v1.WebhookService",
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn grpc_timeouts_read_and_write_in_the_finest_unit_that_fits() {
        let read = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(GRPC_TIMEOUT_HEADER, value.parse().unwrap());
            grpc_timeout(&headers)
        };
        assert_eq!(read("1S"), Some(Duration::from_secs(1)));
        assert_eq!(read("250m"), Some(Duration::from_millis(250)));
        assert_eq!(read("2H"), Some(Duration::from_secs(7_200)));
        assert_eq!(read("123456789S"), None, "nine digits");
        assert_eq!(read("5x"), None);
        assert_eq!(read("S"), None);
        for (timeout, value) in [
            (Duration::from_nanos(7), "7n"),
            (Duration::from_millis(250), "250000u"),
            (Duration::from_secs(1), "1000000u"),
            (Duration::from_secs(600), "600000m"),
            (Duration::from_secs(34_560_000), "34560000S"),
            (Duration::from_secs(6_000_000_000), "1666666H"),
        ] {
            assert_eq!(grpc_timeout_value(timeout), value);
            assert!(read(value).is_some_and(|back| back <= timeout && back > timeout / 2));
        }
    }
}
