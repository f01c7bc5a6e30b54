//! Fuzz target: the router probe's datagrams (`crust::probe::wire`
//! requests and responses) and the collector's report messages
//! (`crust::probe::Envelope::decode`), all bytes from the network.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = crust::probe::wire::Request::decode(data);
    let _ = crust::probe::wire::Response::decode(data);
    let mut with_magic = crust::probe::MESSAGE_MAGIC.to_vec();
    with_magic.extend_from_slice(data);
    let _ = crust::probe::Envelope::decode(&with_magic);
    let _ = crust::probe::Envelope::decode(data);
});
