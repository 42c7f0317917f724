package resp

import (
	"bufio"
	"fmt"
	"strconv"

	"github.com/gomodule/redigo/redis"
)

// AppendArg appends to dst the bytes redigo sends for one command argument:
// a string or []byte as it is, an int or int64 in decimal, a float64 in the
// shortest form that reads back the same (strconv 'g', -1), a bool as 1 or
// 0, nil as nothing, a redis.Argument as its RedisArg (printed with fmt if
// that is an Argument again), and anything else as fmt.Fprint prints it:
// other integer types in decimal, an error as its message. It allocates
// nothing but dst's growth for all but the fmt cases.
//
// The framing around the bytes, the bulk string header and CRLF, is not
// part of it: this is what code that must see an argument as the server
// will (command classification, cluster key slots) needs.
func AppendArg(dst []byte, arg any) []byte {
	if a, ok := arg.(redis.Argument); ok {
		arg = a.RedisArg()
		if _, again := arg.(redis.Argument); again {
			// redigo resolves one level only.
			return fmt.Append(dst, arg)
		}
	}
	switch a := arg.(type) {
	case string:
		return append(dst, a...)
	case []byte:
		return append(dst, a...)
	case int:
		return strconv.AppendInt(dst, int64(a), 10)
	case int64:
		return strconv.AppendInt(dst, a, 10)
	case float64:
		return strconv.AppendFloat(dst, a, 'g', -1, 64)
	case bool:
		if a {
			return append(dst, '1')
		}
		return append(dst, '0')
	case nil:
		return dst
	}
	return fmt.Append(dst, arg)
}

// writer writes commands as redigo's writeCommand does, byte for byte.
type writer struct {
	bw      *bufio.Writer
	header  [24]byte // '$' or '*', a length and CRLF
	scratch [64]byte // an argument that is neither string nor []byte, formatted
}

// writeCommand writes cmd and args as an array of bulk strings. An error
// sticks in bw, so the last write returns the first error of any.
func (w *writer) writeCommand(cmd string, args []any) error {
	w.writeHeader('*', 1+len(args))
	w.writeHeader('$', len(cmd))
	w.bw.WriteString(cmd)
	_, err := w.bw.WriteString("\r\n")
	for _, arg := range args {
		switch a := arg.(type) {
		case string:
			w.writeHeader('$', len(a))
			w.bw.WriteString(a)
		case []byte:
			w.writeHeader('$', len(a))
			w.bw.Write(a)
		default:
			p := AppendArg(w.scratch[:0], arg)
			w.writeHeader('$', len(p))
			w.bw.Write(p)
		}
		_, err = w.bw.WriteString("\r\n")
	}
	return err
}

func (w *writer) writeHeader(prefix byte, n int) {
	// Digits from the end, as strconv would, without its general case.
	i := len(w.header) - 2
	w.header[i], w.header[i+1] = '\r', '\n'
	for {
		i--
		w.header[i] = byte('0' + n%10)
		if n /= 10; n == 0 {
			break
		}
	}
	i--
	w.header[i] = prefix
	w.bw.Write(w.header[i:])
}
