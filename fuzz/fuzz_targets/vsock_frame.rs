//! Fuzz target: decoding a vsock frame body, either direction, must never panic.
#![no_main]

use ekms_wire::{
    frame,
    msg::{EnclaveResponse, HostRequest},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame::decode::<HostRequest>(data);
    let _ = frame::decode::<EnclaveResponse>(data);
});
