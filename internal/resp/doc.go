// Package resp reads and writes the Redis protocol (RESP2) the way redigo
// does, but with memory in proportion to the bytes a peer actually sends.
//
// It exists because redigo's reader trusts the lengths a peer declares: a
// server on the wrong port, a broken proxy or a stream out of step that
// answers with "$2000000000" makes redigo allocate 2 GB before a byte of
// it arrives, and "*2000000000" kills the process with an out-of-memory
// fatal error no recover can catch. A [Reader] here grows bulk strings and
// arrays as their bytes arrive, parses nested arrays without recursion, and
// rejects what no Redis server sends with a [*ProtocolError].
//
// For every valid reply a [Reader] returns exactly the values redigo v1.9.3
// returns, and a [Conn] is a drop-in replacement for redigo's connection
// (redis.NewConn), differing where noted on [NewConn]: its read timeout
// bounds silence rather than a whole reply.
//
// The package knows nothing of pools.
package resp
