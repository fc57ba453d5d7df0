package delta

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

// The throughput of the format alone, on revisions shaped like a Kubernetes cluster's (values of
// up to 300 bytes, one in five a txn): go test -run '^$' -bench . ./internal/delta/
// Reported in events/s and MB/s of plain segment; not a timed test.

func benchRecords(b *testing.B) ([]Record, int) {
	recs := gen(rand.New(rand.NewPCG(13, 14)), 0, 10000, 0)
	events := 0
	for _, r := range recs {
		if rev, ok := r.(Revision); ok {
			events += len(rev.Events)
		}
	}
	return recs, events
}

func BenchmarkEncode(b *testing.B) {
	recs, events := benchRecords(b)
	size := len(encode(b, recs))
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		w := NewWriter(io.Discard)
		for _, r := range recs {
			if err := w.Append(r); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(events*b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkDecode(b *testing.B) {
	recs, events := benchRecords(b)
	data := encode(b, recs)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r := NewReader(bytes.NewReader(data))
		for {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(events*b.N)/b.Elapsed().Seconds(), "events/s")
}
