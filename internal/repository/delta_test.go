package repository

import (
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const base = "20261201T030000Z-0a1b2c3d"

func TestSegmentNames(t *testing.T) {
	s := SegmentRef{Base: base, First: 1001, Last: 1500}
	require.Equal(t, "deltas/"+base+"/0000000000000001001-0000000000000001500.json", s.ManifestName())
	require.Equal(t, "deltas/"+base+"/0000000000000001001-0000000000000001500.delta.zst", s.DataName(Codec{Compression: CompressionZstd}))
	got, ok := ParseSegmentManifestName(s.ManifestName())
	require.True(t, ok)
	require.Equal(t, s, got)

	for _, name := range []string{
		s.DataName(Codec{Compression: CompressionZstd}), // data, not a manifest
		ChainEndName(base),
		"deltas/" + base + "/1001-1500.json", // not padded
		"deltas/" + base + "/0000000000000001500-0000000000000001001.json",    // last before first
		"deltas/" + base + "/0000000000000000000-0000000000000000005.json",    // revision 0
		"deltas/not-an-id/0000000000000001001-0000000000000001500.json",       // base is no id
		"deltas/" + base + "/x/0000000000000001001-0000000000000001500.json",  // nested
		"snapshots/" + base + "/0000000000000001001-0000000000000001500.json", // another folder
		"deltas/" + base + "/-000000000000001001-0000000000000001500.json",    // negative
		"deltas/" + base + "/+000000000000001001-0000000000000001500.json",    // a sign: not the name of 1001-1500
		"deltas/" + base + "/0000000000000001001-+000000000000001500.json",    // a sign in the last
	} {
		_, ok := ParseSegmentManifestName(name)
		require.False(t, ok, name)
	}

	// Names sort as their revisions, so a listing is in chain order.
	var names []string
	for _, r := range [][2]int64{{900000, 1000000}, {5, 99}, {100, 899999}} {
		names = append(names, SegmentRef{Base: base, First: r[0], Last: r[1]}.ManifestName())
	}
	sort.Strings(names)
	var firsts []int64
	for _, n := range names {
		r, _ := ParseSegmentManifestName(n)
		firsts = append(firsts, r.First)
	}
	require.Equal(t, []int64{5, 100, 900000}, firsts)
	require.Less(t, names[len(names)-1], ChainEndName(base), "the end record sorts after every segment")
}

func TestCheckChain(t *testing.T) {
	seg := func(first, last int64) SegmentRef { return SegmentRef{Base: base, First: first, Last: last} }
	tests := []struct {
		name    string
		segs    []SegmentRef
		reaches int64
		wantErr string
	}{
		{"no segment yet", nil, 100, ""},
		{"one", []SegmentRef{seg(101, 150)}, 150, ""},
		{"listed out of order", []SegmentRef{seg(151, 151), seg(101, 150), seg(152, 400)}, 400, ""},
		{"a gap", []SegmentRef{seg(101, 150), seg(160, 170)}, 150, "revisions 151-159 are in no segment"},
		{"starts late", []SegmentRef{seg(105, 150)}, 100, "revisions 101-104 are in no segment"},
		{"an overlap", []SegmentRef{seg(101, 150), seg(140, 170)}, 150, "overlaps the revisions before 151"},
		{"starts before its base", []SegmentRef{seg(90, 150)}, 100, "overlaps"},
		{"another chain's segment", []SegmentRef{{Base: "20261201T040000Z-00000000", First: 101, Last: 120}}, 0, "is not of the chain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, reaches, err := CheckChain(base, 100, tt.segs)
			if tt.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tt.wantErr)
			}
			require.Equal(t, tt.reaches, reaches)
		})
	}
}

func TestCheckLinks(t *testing.T) {
	full := Manifest{ID: base, ClusterID: "c1", DataObject: DataObject{SHA256: "s0"}}
	s1 := SegmentManifest{Kind: KindDelta, Base: base, ClusterID: "c1", First: 101, Last: 150, Prev: ManifestName(base), PrevSHA256: "s0", DataObject: DataObject{SHA256: "s1"}}
	s2 := SegmentManifest{Kind: KindDelta, Base: base, ClusterID: "c1", First: 151, Last: 160, Prev: s1.Ref().ManifestName(), PrevSHA256: "s1", DataObject: DataObject{SHA256: "s2"}}
	require.NoError(t, CheckLinks(full, []SegmentManifest{s1, s2}))
	require.NoError(t, CheckLinks(full, nil))

	swapped := s2
	swapped.PrevSHA256 = "other"
	otherCluster := s1
	otherCluster.ClusterID = "c2"
	for name, segs := range map[string][]SegmentManifest{
		"a predecessor's data replaced": {s1, swapped},
		"a segment dropped":             {s2},
		"reordered":                     {s2, s1},
		"another cluster":               {otherCluster},
	} {
		require.ErrorIs(t, CheckLinks(full, segs), ErrChainBroken, name)
	}
}

func TestMarksAndIndex(t *testing.T) {
	at := time.Date(2026, 12, 1, 3, 12, 7, 250e6, time.UTC)
	m := Mark{Revision: 4242, At: at}
	require.Equal(t, "marks/0000000000000004242-20261201T031207.250Z", MarkName(m))
	got, ok := ParseMarkName(MarkName(m))
	require.True(t, ok)
	require.Equal(t, m, got)
	// Newer marks sort later, also when the revision stays (an idle cluster).
	require.Less(t, MarkName(m), MarkName(Mark{Revision: 4242, At: at.Add(time.Second)}))
	require.Less(t, MarkName(m), MarkName(Mark{Revision: 10000, At: at}))

	e := IndexEntry{At: at, Revision: 4242}
	require.Equal(t, "index/20261201/20261201T031207.250Z-0000000000000004242", IndexName(e))
	require.Equal(t, "index/20261201/", IndexDayPrefix(at))
	ge, ok := ParseIndexName(IndexName(e))
	require.True(t, ok)
	require.Equal(t, e, ge)
	for _, bad := range []string{
		"index/20261202/20261201T031207.250Z-0000000000000004242", // in the wrong day's folder
		"index/20261201/20261201T031207.250Z-4242",
		"marks/0000000000000004242-20261201T031207.250Z",
		"index/20261201/20261201T031207.250Z-+000000000000004242", // a sign
		"index/20261201/20261201T031207,250Z-0000000000000004242", // a comma: another name of the same entry
	} {
		_, ok := ParseIndexName(bad)
		require.False(t, ok, bad)
	}
	// Each record has one name: one that parses to it under another spelling would sort
	// elsewhere, and a listing taken in name order would misplace it.
	for _, bad := range []string{
		"marks/0000000000000004242-yesterday",
		"marks/+000000000000004242-20261201T031207.250Z",
		"marks/0000000000000004242-20261201T031207,250Z",
	} {
		_, ok := ParseMarkName(bad)
		require.False(t, ok, bad)
	}

	entries := []IndexEntry{{at.Add(2 * time.Minute), 500}, {at, 300}, {at.Add(time.Minute), 400}}
	tests := []struct {
		at     time.Time
		want   int64
		wantOK bool
	}{
		{at.Add(-time.Second), 0, false},
		{at, 300, true},
		{at.Add(90 * time.Second), 400, true},
		{at.Add(time.Hour), 500, true},
	}
	for _, tt := range tests {
		rev, ok := RevisionAt(entries, tt.at)
		require.Equal(t, tt.wantOK, ok, tt.at)
		require.Equal(t, tt.want, rev, tt.at)
	}
}
