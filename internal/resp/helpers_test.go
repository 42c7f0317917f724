package resp

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// scriptConn is a net.Conn whose peer has already said everything: reads
// come from what it was given and end in io.EOF, writes are recorded.
// Deadlines are accepted and ignored.
type scriptConn struct {
	r       io.Reader
	written bytes.Buffer
	closed  bool
}

func newScriptConn(serverSays string) *scriptConn {
	return &scriptConn{r: bytes.NewReader([]byte(serverSays))}
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.r.Read(p)
}

func (c *scriptConn) Write(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.written.Write(p)
}

func (c *scriptConn) Close() error                     { c.closed = true; return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// redigoReply is the oracle: what redigo's reader makes of data, with an
// error reply as a value, as ReadReply returns it.
func redigoReply(data []byte) (any, error) {
	c := redis.NewConn(&scriptConn{r: bytes.NewReader(data)}, 0, 0)
	v, err := c.Receive()
	if e, ok := err.(redis.Error); ok {
		return e, nil
	}
	return v, err
}

// readOne reads the first reply in data with a fresh Reader.
func readOne(data string, opts ...Option) (any, error) {
	return NewReader(bytes.NewReader([]byte(data)), opts...).ReadReply()
}

// allocatedBy returns the bytes the heap handed out while f ran. Only a
// test that is not parallel may use it: the count is the whole process's.
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// fakeServer answers on one end of a net.Pipe; serve runs on its own
// goroutine, which the test's cleanup waits for after closing both ends.
func fakeServer(t *testing.T, serve func(server net.Conn)) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	var wg sync.WaitGroup
	wg.Go(func() { serve(server) })
	t.Cleanup(func() {
		client.Close()
		server.Close()
		wg.Wait()
	})
	return client
}

// readCommand reads one command as a server does, using the package's own
// Reader (a command is an array of bulk strings).
func readCommand(t *testing.T, rd *Reader) []string {
	v, err := rd.ReadReply()
	if err != nil {
		t.Errorf("server reading a command: %v", err)
		return nil
	}
	var args []string
	for _, a := range v.([]any) {
		args = append(args, string(a.([]byte)))
	}
	return args
}
