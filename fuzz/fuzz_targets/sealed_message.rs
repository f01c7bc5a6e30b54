//! Fuzz target: sealed offline messages as a (possibly hostile) holder
//! hands them over, through `chat_core::fuzzing::sealed_message`: opening
//! garbage fails cleanly, and a sealed body opens to itself and not with a
//! bit flipped.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (flip, body) = data.split_at(data.len().min(4));
    let mut index = [0u8; 4];
    index[..flip.len()].copy_from_slice(flip);
    chat_core::fuzzing::sealed_message(body, u32::from_le_bytes(index) as usize);
});
