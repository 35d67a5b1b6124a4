//! A small, valid WAV file: RIFF header, PCM 8 kHz mono 16-bit, a tone standing in for a call.
//!
//! Clients only need bytes that a WAV reader accepts and whose size tracks the call; a tone is
//! the cheapest thing that is both, and it is audible, so someone listening knows it is fake.

pub const SAMPLE_RATE: u32 = 8_000;
const BITS_PER_SAMPLE: u16 = 16;
const CHANNELS: u16 = 1;
pub const HEADER_LEN: usize = 44;
/// Recordings are cut to this, so a list of them stays small whatever the call lasted.
pub const MAX_MILLIS: u32 = 2_000;
const MIN_MILLIS: u32 = 250;

/// Whose voice a recording holds; each gets its own pitch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Combined,
    User,
    Agent,
}

/// The recording of a call of `call_seconds`: 10 ms of audio per second of call, within bounds.
/// `redacted` silences the middle third, where a caller's card number would have been.
pub fn recording(call_seconds: u32, direction: Direction, redacted: bool) -> Vec<u8> {
    let millis = call_seconds.saturating_mul(10).clamp(MIN_MILLIS, MAX_MILLIS);
    let count = (SAMPLE_RATE * millis / 1000) as usize;
    let samples: Vec<i16> = (0..count)
        .map(|n| {
            if redacted && (count / 3..2 * count / 3).contains(&n) {
                return 0;
            }
            let user = (n / (SAMPLE_RATE as usize / 4)).is_multiple_of(2);
            let pitch = match direction {
                Direction::User => 440.0,
                Direction::Agent => 660.0,
                // Alternating turns every quarter second, as a conversation would.
                Direction::Combined if user => 440.0,
                Direction::Combined => 660.0,
            };
            let phase = 2.0 * std::f64::consts::PI * pitch * n as f64 / f64::from(SAMPLE_RATE);
            (phase.sin() * f64::from(i16::MAX) * 0.3) as i16
        })
        .collect();
    encode(&samples)
}

/// The canonical 44-byte header, then the samples little-endian.
pub fn encode(samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let block_align = CHANNELS * BITS_PER_SAMPLE / 8;
    let mut out = Vec::with_capacity(HEADER_LEN + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&CHANNELS.to_le_bytes());
    out.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    out.extend_from_slice(&(SAMPLE_RATE * u32::from(block_align)).to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&BITS_PER_SAMPLE.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for sample in samples {
        out.extend_from_slice(&sample.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    #[test]
    fn the_header_describes_8_khz_mono_16_bit_pcm_and_matches_the_data() {
        let wav = recording(74, Direction::Combined, false);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(u32_at(&wav, 4) as usize, wav.len() - 8);
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        assert_eq!(u32_at(&wav, 16), 16);
        assert_eq!((u16_at(&wav, 20), u16_at(&wav, 22)), (1, 1));
        assert_eq!((u32_at(&wav, 24), u32_at(&wav, 28)), (8_000, 16_000));
        assert_eq!((u16_at(&wav, 32), u16_at(&wav, 34)), (2, 16));
        assert_eq!(&wav[36..40], b"data");
        assert_eq!(u32_at(&wav, 40) as usize, wav.len() - HEADER_LEN);
        assert_eq!(wav.len() - HEADER_LEN, 740 * 16, "74 s of call → 740 ms of audio");
    }

    #[test]
    fn length_follows_the_call_within_bounds() {
        let data = |seconds| recording(seconds, Direction::User, false).len() - HEADER_LEN;
        assert_eq!(data(1), 250 * 16);
        assert_eq!(data(3600), MAX_MILLIS as usize * 16);
        assert!(data(30) < data(60));
    }

    #[test]
    fn redaction_silences_the_middle_and_keeps_the_length() {
        let plain = recording(90, Direction::Agent, false);
        let redacted = recording(90, Direction::Agent, true);
        assert_eq!(plain.len(), redacted.len());
        let middle = HEADER_LEN + (redacted.len() - HEADER_LEN) / 2;
        assert!(redacted[middle - 20..middle + 20].iter().all(|b| *b == 0));
        assert!(plain[middle - 20..middle + 20].iter().any(|b| *b != 0));
    }
}
