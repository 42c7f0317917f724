package redistest

import "strings"

// slotCount is the number of hash slots in a Redis Cluster.
const slotCount = 16384

// KeySlot returns the hash slot Redis Cluster assigns to key: CRC16 (XMODEM)
// mod 16384 of the key, or only of the part between its first "{" and the
// first "}" after it when that part is not empty, so that keys sharing a
// hash tag share a slot.
func KeySlot(key string) int {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if n := strings.IndexByte(key[open+1:], '}'); n > 0 {
			key = key[open+1 : open+1+n]
		}
	}
	return int(crc16(key)) % slotCount
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0, no
// reflection), the variant the Redis Cluster specification names; bitwise
// rather than a table because tests hash few keys.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
