package redistest

import "github.com/redisalive/redisalive/internal/slot"

// slotCount is the number of hash slots in a Redis Cluster.
const slotCount = slot.Count

// KeySlot returns the hash slot Redis Cluster assigns to key; the tests of
// this package check it against CLUSTER KEYSLOT on a real cluster.
func KeySlot(key string) int { return slot.Of(key) }
