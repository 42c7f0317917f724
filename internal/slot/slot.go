// Package slot computes the hash slots of Redis Cluster keys.
package slot

// Count is the number of hash slots in a Redis Cluster.
const Count = 16384

// Of returns the hash slot Redis Cluster assigns to key: CRC16 (XMODEM) mod
// 16384 of the key, or only of the part between its first "{" and the first
// "}" after it when that part is not empty, so that keys sharing a hash tag
// share a slot.
func Of[K string | []byte](key K) int {
	for open := 0; open < len(key); open++ {
		if key[open] != '{' {
			continue
		}
		for end := open + 1; end < len(key); end++ {
			if key[end] == '}' {
				if end > open+1 {
					key = key[open+1 : end]
				}
				break
			}
		}
		break
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc = crc<<8 ^ table[byte(crc>>8)^key[i]]
	}
	return int(crc) % Count
}

// table is CRC-16/XMODEM (polynomial 0x1021, initial value 0, no
// reflection) by byte, the variant the Redis Cluster specification names.
var table = func() (t [256]uint16) {
	for i := range t {
		crc := uint16(i) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return t
}()
