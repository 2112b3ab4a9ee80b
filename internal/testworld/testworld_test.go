package testworld

import (
	"net"
	"strconv"
	"testing"
)

func TestFreePortCanBeBound(t *testing.T) {
	p, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatalf("port %d is not free: %v", p, err)
	}
	l.Close()
	a, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := net.SplitHostPort(a); err != nil {
		t.Fatalf("FreeAddr %q: %v", a, err)
	}
}
