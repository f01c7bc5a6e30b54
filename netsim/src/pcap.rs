//! A pcap writer (LINKTYPE_RAW: each record is a bare IP packet), one file per
//! link. Records are written as packets are delivered, with wall-clock time.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// LINKTYPE_RAW from the tcpdump link-type registry.
const LINKTYPE_RAW: u32 = 101;

pub(crate) struct Pcap {
    out: BufWriter<File>,
    failed: bool,
}

impl Pcap {
    pub(crate) fn create(path: &Path) -> std::io::Result<Pcap> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&65535u32.to_le_bytes())?;
        out.write_all(&LINKTYPE_RAW.to_le_bytes())?;
        Ok(Pcap { out, failed: false })
    }

    pub(crate) fn write(&mut self, pkt: &[u8]) {
        if self.failed {
            return;
        }
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let len = pkt.len() as u32;
        let r = (|| {
            self.out.write_all(&(t.as_secs() as u32).to_le_bytes())?;
            self.out.write_all(&t.subsec_micros().to_le_bytes())?;
            self.out.write_all(&len.to_le_bytes())?;
            self.out.write_all(&len.to_le_bytes())?;
            self.out.write_all(pkt)
        })();
        if let Err(e) = r {
            tracing::warn!("pcap write failed, capture stopped: {e}");
            self.failed = true;
        }
    }

    pub(crate) fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            tracing::warn!("pcap flush failed: {e}");
        }
    }
}

impl Drop for Pcap {
    fn drop(&mut self) {
        self.flush();
    }
}
