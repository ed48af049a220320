//! Key-to-partition mapping shared by every event-log adapter.
//!
//! It is Kafka's default (murmur2, as the Java client computes it), so records land in
//! the same partition whichever adapter or client produced them.

/// Kafka's murmur2 hash.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ len as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= (tail[2] as u32) << 16;
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition a key belongs to among `partitions`.
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// The partition keys of a campaign spread over `shards` shards of a topic with
/// `partitions` partitions: the campaign's own key first (what an unsharded campaign
/// uses), then for each further shard a key `<campaign>/<n>` that lands on the next
/// partition after the previous shard's. Consecutive partitions, because processes
/// own partitions round-robin: any number of processes then share a campaign's shards
/// evenly (within one). At most `partitions` keys; the same arguments give the same
/// keys everywhere.
pub fn shard_keys(campaign: &str, shards: u32, partitions: u32) -> Vec<Vec<u8>> {
    let partitions = partitions.max(1);
    let want = shards.clamp(1, partitions);
    let base = partition_for(campaign.as_bytes(), partitions);
    let mut keys = vec![campaign.as_bytes().to_vec()];
    let mut n = 0u64;
    for shard in 1..want {
        let target = (base + shard) % partitions;
        // A key hits a given partition once in `partitions` tries on average.
        let limit = n + 1_000 * u64::from(partitions);
        while n < limit {
            n += 1;
            let key = format!("{campaign}/{n}").into_bytes();
            if partition_for(&key, partitions) == target {
                keys.push(key);
                break;
            }
        }
    }
    keys
}

/// Which of `shards` shards message `id` (its bytes) belongs to.
pub fn shard_of(id: &[u8], shards: usize) -> usize {
    (murmur2(id) & 0x7fff_ffff) as usize % shards.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_keys_land_on_consecutive_partitions_from_the_campaigns_own() {
        let campaign = "6c8f6f5e-8a1d-4c39-9f55-3f5e2c1a0b11";
        assert_eq!(
            shard_keys(campaign, 1, 32),
            vec![campaign.as_bytes().to_vec()]
        );
        for (shards, partitions) in [(4, 32), (32, 32), (40, 32), (3, 3), (8, 1)] {
            let keys = shard_keys(campaign, shards, partitions);
            assert_eq!(keys.len(), shards.min(partitions) as usize);
            assert_eq!(keys[0], campaign.as_bytes());
            // Consecutive partitions from the campaign's own.
            let parts: Vec<u32> = keys.iter().map(|k| partition_for(k, partitions)).collect();
            for (i, p) in parts.iter().enumerate() {
                assert_eq!(
                    *p,
                    (parts[0] + i as u32) % partitions,
                    "{shards} over {partitions}"
                );
            }
            assert_eq!(keys, shard_keys(campaign, shards, partitions));
        }
        // Messages spread evenly over the shards.
        let mut counts = [0usize; 8];
        for i in 0u32..8000 {
            counts[shard_of(&i.to_le_bytes(), 8)] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn matches_kafka_reference_values() {
        // Values from the Java client's Utils.murmur2 test vectors.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }
}
