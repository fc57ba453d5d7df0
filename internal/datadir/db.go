package datadir

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/bbolt"
)

// The database is walked page by page by this package before bbolt touches its data, because
// bbolt cannot be asked about a damaged file safely: tx.Check runs in a goroutine of its own,
// and panics there (Page.FastCheck, "page N: expected to be ..." on a zeroed page) or, with the
// freelist not synced to disk (etcd's choice on Linux), in the freelist rebuild's goroutine at
// the first problem it finds; neither can be recovered by a caller and both end the process.
// A page reference beyond the file reads unmapped memory, which is a fatal fault, not a panic.
// So bbolt's Open (for its lock and meta checks) and Check (for its verdict) are only used once
// the walk below has found every page it will visit well-formed. The walk makes the checks
// bbolt's Check makes (page ids, types, bounds, single reference, key order, freelist) and
// more (element bounds, inline buckets).
//
// The on-disk layout (bbolt 1.x, little-endian hosts, as etcd writes it):
//   page header (16 bytes): id u64, flags u16, count u16, overflow u32
//   meta (after the header of pages 0 and 1): magic u32, version u32, pageSize u32, flags u32,
//     root bucket {root pgid u64, sequence u64}, freelist pgid u64, high water mark pgid u64,
//     txid u64, checksum u64 (FNV-64a of the 56 bytes before it)
//   branch element (16 bytes): pos u32, ksize u32, pgid u64 (key at element + pos)
//   leaf element (16 bytes): flags u32, pos u32, ksize u32, vsize u32 (key, then value, at
//     element + pos); flag 1 marks a nested bucket whose value is {root pgid u64, sequence
//     u64}, followed by an inline page when root is 0
//   freelist page: count ids u64 (when count is 0xFFFF, the first u64 is the count)

const (
	boltMagic          = 0xED0CDAED
	boltVersion        = 2
	boltHeaderSize     = 16
	boltElementSize    = 16
	boltBucketHdrSize  = 16
	boltBranchFlag     = 0x01
	boltLeafFlag       = 0x02
	boltMetaFlag       = 0x04
	boltFreelistFlag   = 0x10
	boltBucketLeafFlag = 0x01
	boltNoFreelist     = ^uint64(0)

	// lockTimeout bounds the wait for the database's shared lock: a running etcd holds it
	// exclusively, and a folder in use must be reported rather than waited on.
	lockTimeout = 500 * time.Millisecond
	// maxDBProblems bounds how many problems Err quotes.
	maxDBProblems = 8
)

// etcd's buckets and meta keys (go.etcd.io/etcd/server/v3/storage/schema).
var (
	keyBucketName         = []byte("key")
	metaBucketName        = []byte("meta")
	membersBucketName     = []byte("members")
	consistentIndexKey    = "consistent_index"
	termKey               = "term"
	finishedCompactKey    = "finishedCompactRev"
	scheduledCompactKey   = "scheduledCompactRev"
	metaKeysOfInterest    = []string{consistentIndexKey, termKey, finishedCompactKey, scheduledCompactKey}
	pageInBoltCheckRegexp = regexp.MustCompile(`(?i)(?:page[ (]*(?:id[ (]*)?|pgid:)(\d+)`)
)

type boltMeta struct {
	pageSize                  uint32
	root, freelist, hwm, txid uint64
	err                       string // why bbolt rejects it; "" when valid
}

func parseBoltMeta(b []byte) boltMeta {
	if len(b) < 64 {
		return boltMeta{err: "cut short"}
	}
	m := boltMeta{
		pageSize: binary.LittleEndian.Uint32(b[8:]),
		root:     binary.LittleEndian.Uint64(b[16:]),
		freelist: binary.LittleEndian.Uint64(b[32:]),
		hwm:      binary.LittleEndian.Uint64(b[40:]),
		txid:     binary.LittleEndian.Uint64(b[48:]),
	}
	h := fnv.New64a()
	h.Write(b[:56])
	switch {
	case binary.LittleEndian.Uint32(b[0:]) != boltMagic:
		m.err = "not a bbolt meta page (bad magic)"
	case binary.LittleEndian.Uint32(b[4:]) != boltVersion:
		m.err = "unknown bbolt version"
	case binary.LittleEndian.Uint64(b[56:]) != h.Sum64():
		m.err = "checksum mismatch"
	}
	return m
}

// treeCtx says which of etcd's buckets a tree belongs to, for the few values read from them.
type treeCtx int

const (
	ctxOther treeCtx = iota
	ctxRoot
	ctxKey
	ctxMeta
	ctxMembers
)

type dbWalker struct {
	f *os.File
	// data maps the file read-only when that works: reading a page is then a slice, not a
	// system call and an allocation (bbolt's check maps the file too, right after).
	data     []byte
	path     string
	size     int64
	ps       int64
	hwm      uint64
	reached  pageSet // pages in use, found on the walk
	bad      map[uint64]bool
	problems []string
	notes    []string // findings that are not damage
	// skipBoltCheck is set when bbolt's Check would crash on a page that is not damage to the
	// data: a meta page whose header is damaged (Check reads both meta pages).
	skipBoltCheck bool

	lastKey  []byte            // the greatest key of the key bucket
	metaVals map[string][]byte // the meta bucket's values of interest
	// voters and learners count the members of the members bucket.
	voters, learners int
}

func (w *dbWalker) problem(page uint64, format string, args ...any) {
	w.bad[page] = true
	w.problems = append(w.problems, fmt.Sprintf("page %d: %s", page, fmt.Sprintf(format, args...)))
}

// readAt reads n bytes at off, or reports why it cannot (as a problem of page).
func (w *dbWalker) readAt(page uint64, off, n int64) ([]byte, bool) {
	if off < 0 || n < 0 || off+n > w.size {
		w.problem(page, "lies beyond the end of the file (%d bytes)", w.size)
		return nil, false
	}
	if w.data != nil {
		return w.data[off : off+n : off+n], true
	}
	buf := make([]byte, n)
	if _, err := w.f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		w.problem(page, "cannot be read: %v", err)
		return nil, false
	}
	return buf, true
}

// pageSet is a set of page ids below the high water mark, one bit a page.
type pageSet []uint64

func (s pageSet) has(id uint64) bool { return s[id/64]&(1<<(id%64)) != 0 }
func (s pageSet) add(id uint64)      { s[id/64] |= 1 << (id % 64) }

// page reads page id, referenced from page parent, checking its header and marking it reached.
func (w *dbWalker) page(id, parent uint64) ([]byte, bool) {
	if id < 2 || id >= w.hwm {
		w.problem(parent, "refers to page %d, outside the pages in use [2, %d)", id, w.hwm)
		return nil, false
	}
	if w.reached.has(id) {
		w.problem(id, "referenced more than once (again from page %d)", parent)
		return nil, false
	}
	buf, ok := w.readAt(id, int64(id)*w.ps, w.ps)
	if !ok {
		return nil, false
	}
	w.reached.add(id)
	if got := binary.LittleEndian.Uint64(buf); got != id {
		w.problem(id, "its header names page %d: the page was zeroed or overwritten (referenced from page %d)", got, parent)
		return nil, false
	}
	overflow := uint64(binary.LittleEndian.Uint32(buf[12:]))
	if overflow == 0 {
		return buf, true
	}
	if id+overflow >= w.hwm {
		w.problem(id, "%d overflow pages run past the pages in use [2, %d)", overflow, w.hwm)
		return nil, false
	}
	for i := uint64(1); i <= overflow; i++ {
		if w.reached.has(id + i) {
			w.problem(id+i, "referenced more than once (as an overflow page of page %d)", id)
			return nil, false
		}
		w.reached.add(id + i)
	}
	full, ok := w.readAt(id, int64(id)*w.ps, int64(overflow+1)*w.ps)
	return full, ok
}

// tree walks the B+tree rooted at page id, checking key order as bbolt's Check does; it returns
// the greatest key of the subtree.
func (w *dbWalker) tree(id, parent uint64, minKey, maxKey []byte, ctx treeCtx) []byte {
	buf, ok := w.page(id, parent)
	if !ok {
		return nil
	}
	flags := binary.LittleEndian.Uint16(buf[8:])
	count := int(binary.LittleEndian.Uint16(buf[10:]))
	switch flags {
	case boltBranchFlag:
		keys, children, ok := w.branchElements(id, buf, count)
		if !ok {
			return nil
		}
		var maxInSubtree []byte
		running := minKey
		for i := range keys {
			w.keyOrder(id, i, keys[i], running, maxKey)
			upper := maxKey
			if i < len(keys)-1 {
				upper = keys[i+1]
			}
			maxInSubtree = w.tree(children[i], id, keys[i], upper, ctx)
			running = maxInSubtree
		}
		return maxInSubtree
	case boltLeafFlag:
		return w.leaf(id, buf, count, minKey, maxKey, ctx)
	default:
		w.problem(id, "has type %#x where a branch or leaf page belongs (referenced from page %d)", flags, parent)
		return nil
	}
}

func (w *dbWalker) branchElements(id uint64, buf []byte, count int) (keys [][]byte, children []uint64, ok bool) {
	if boltHeaderSize+count*boltElementSize > len(buf) {
		w.problem(id, "%d elements do not fit in the page", count)
		return nil, nil, false
	}
	for i := range count {
		e := boltHeaderSize + i*boltElementSize
		pos := int64(binary.LittleEndian.Uint32(buf[e:]))
		ksize := int64(binary.LittleEndian.Uint32(buf[e+4:]))
		start := int64(e) + pos
		if start+ksize > int64(len(buf)) {
			w.problem(id, "element %d lies outside the page", i)
			return nil, nil, false
		}
		keys = append(keys, bytes.Clone(buf[start:start+ksize]))
		children = append(children, binary.LittleEndian.Uint64(buf[e+8:]))
	}
	return keys, children, true
}

// leaf checks a leaf page (or an inline bucket's page, where id is the page holding it) and
// walks the buckets it holds.
func (w *dbWalker) leaf(id uint64, buf []byte, count int, minKey, maxKey []byte, ctx treeCtx) []byte {
	if boltHeaderSize+count*boltElementSize > len(buf) {
		w.problem(id, "%d elements do not fit in the page", count)
		return nil
	}
	running := minKey
	for i := range count {
		e := boltHeaderSize + i*boltElementSize
		flags := binary.LittleEndian.Uint32(buf[e:])
		pos := int64(binary.LittleEndian.Uint32(buf[e+4:]))
		ksize := int64(binary.LittleEndian.Uint32(buf[e+8:]))
		vsize := int64(binary.LittleEndian.Uint32(buf[e+12:]))
		start := int64(e) + pos
		if start+ksize+vsize > int64(len(buf)) {
			w.problem(id, "element %d lies outside the page", i)
			return nil
		}
		key := buf[start : start+ksize]
		value := buf[start+ksize : start+ksize+vsize]
		w.keyOrder(id, i, key, running, maxKey)
		running = key
		if flags&boltBucketLeafFlag != 0 {
			w.bucket(id, i, key, value, ctx)
			continue
		}
		switch ctx {
		case ctxKey:
			if bytes.Compare(key, w.lastKey) > 0 {
				w.lastKey = bytes.Clone(key)
			}
		case ctxMeta:
			if slices.Contains(metaKeysOfInterest, string(key)) {
				w.metaVals[string(key)] = bytes.Clone(value)
			}
		case ctxMembers:
			// etcd's membership: one JSON record a member (no keys or values of the keyspace).
			var m struct {
				IsLearner bool `json:"isLearner"`
			}
			if json.Unmarshal(value, &m) == nil {
				if m.IsLearner {
					w.learners++
				} else {
					w.voters++
				}
			}
		}
	}
	if count > 0 {
		return bytes.Clone(running)
	}
	return nil
}

// bucket walks the nested bucket stored as element i of page id.
func (w *dbWalker) bucket(id uint64, i int, key, value []byte, parent treeCtx) {
	ctx := ctxOther
	if parent == ctxRoot {
		switch {
		case bytes.Equal(key, keyBucketName):
			ctx = ctxKey
		case bytes.Equal(key, metaBucketName):
			ctx = ctxMeta
		case bytes.Equal(key, membersBucketName):
			ctx = ctxMembers
		}
	}
	if len(value) < boltBucketHdrSize {
		w.problem(id, "element %d is a bucket too short to hold its header", i)
		return
	}
	root := binary.LittleEndian.Uint64(value)
	if root != 0 {
		w.tree(root, id, nil, nil, ctx)
		return
	}
	inline := value[boltBucketHdrSize:]
	if len(inline) < boltHeaderSize {
		w.problem(id, "element %d is an inline bucket too short to hold a page", i)
		return
	}
	if flags := binary.LittleEndian.Uint16(inline[8:]); flags != boltLeafFlag {
		w.problem(id, "element %d is an inline bucket whose page has type %#x, not leaf", i, flags)
		return
	}
	w.leaf(id, inline, int(binary.LittleEndian.Uint16(inline[10:])), nil, nil, ctx)
}

// keyOrder is bbolt's verifyKeyOrder, with messages that never quote keys.
func (w *dbWalker) keyOrder(id uint64, i int, key, prev, maxOpen []byte) {
	switch {
	case i == 0 && prev != nil && bytes.Compare(prev, key) > 0:
		w.problem(id, "key %d sorts before the key that leads to the page", i)
	case i > 0 && bytes.Compare(prev, key) >= 0:
		w.problem(id, "key %d does not sort after the key before it", i)
	}
	if maxOpen != nil && bytes.Compare(key, maxOpen) >= 0 {
		w.problem(id, "key %d does not sort before the next key of the parent page", i)
	}
}

// freelist checks the freelist page, when the database keeps one on disk (etcd on Linux does
// not), as bbolt's Check does.
func (w *dbWalker) freelist(id uint64) {
	buf, ok := w.page(id, 0)
	if !ok {
		return
	}
	if flags := binary.LittleEndian.Uint16(buf[8:]); flags != boltFreelistFlag {
		w.problem(id, "has type %#x where the freelist belongs", flags)
		return
	}
	count := int64(binary.LittleEndian.Uint16(buf[10:]))
	at := int64(boltHeaderSize)
	if count == 0xFFFF {
		count = int64(binary.LittleEndian.Uint64(buf[at:]))
		at += 8
	}
	if count < 0 || at+count*8 > int64(len(buf)) {
		w.problem(id, "%d free page ids do not fit in the freelist page", count)
		return
	}
	freed := make(map[uint64]bool, count)
	for i := range count {
		p := binary.LittleEndian.Uint64(buf[at+i*8:])
		switch {
		case p < 2 || p >= w.hwm:
			w.problem(id, "lists free page %d, outside the pages in use [2, %d)", p, w.hwm)
		case freed[p]:
			w.problem(p, "freed twice")
		case w.reached.has(p):
			w.problem(p, "in use and free at once")
		}
		freed[p] = true
	}
	for p := uint64(2); p < w.hwm; p++ {
		if !w.reached.has(p) && !freed[p] {
			w.problem(p, "neither in use nor free")
		}
	}
}

// walkDB walks the whole database file; it returns the walker with its findings.
func walkDB(f *os.File, path string, size int64) (w *dbWalker) {
	w = &dbWalker{f: f, path: path, size: size, bad: map[uint64]bool{}, metaVals: map[string][]byte{}}
	if size > 0 && size < 1<<40 {
		if data, release, err := mapFile(f, size, true); err == nil {
			w.data = data
			// Every value kept past the walk (lastKey, metaVals) is a copy.
			defer func() { release(); w.data = nil }()
		}
	}
	defer func() {
		if p := recover(); p != nil {
			w.problems = append(w.problems, fmt.Sprintf("walking the pages panicked: %v", p))
		}
	}()
	head, ok := w.readAt(0, 0, min(size, 4096))
	if !ok || len(head) < boltHeaderSize+64 {
		w.problems = append(w.problems, fmt.Sprintf("%d bytes: too short for a bbolt database", size))
		return w
	}
	m0 := parseBoltMeta(head[boltHeaderSize:])
	ps := int64(0)
	if m0.err == "" {
		ps = int64(m0.pageSize)
	} else {
		for _, c := range []int64{int64(os.Getpagesize()), 4096, 8192, 16384, 32768, 65536} {
			if b, ok := w.readAtQuiet(c+boltHeaderSize, 64); ok && parseBoltMeta(b).err == "" {
				ps = c
				break
			}
		}
	}
	if ps < 1024 || ps > 1<<20 {
		w.problem(0, "no valid meta page (meta page 0: %s)", m0.err)
		return w
	}
	w.ps = ps
	b1, _ := w.readAtQuiet(ps+boltHeaderSize, 64)
	m1 := parseBoltMeta(b1)
	// bbolt uses the meta page with the higher txid if it is valid, else the other one.
	metas := []boltMeta{m0, m1}
	use := 0
	if m1.txid > m0.txid {
		use = 1
	}
	if metas[use].err != "" {
		use = 1 - use
	}
	if metas[use].err != "" {
		w.problem(0, "meta page 0 is invalid (%s) and so is meta page 1 (%s)", m0.err, m1.err)
		return w
	}
	for i, m := range metas {
		if m.err != "" {
			// A torn meta write: bbolt falls back to the other meta page, one transaction older.
			w.notes = append(w.notes, fmt.Sprintf("page %d: invalid meta page (%s), bbolt uses meta page %d, "+
				"one transaction older", i, m.err, use))
		}
	}
	for i := range uint64(2) {
		h, ok := w.readAtQuiet(int64(i)*ps, boltHeaderSize)
		if ok && binary.LittleEndian.Uint64(h) == i && validPageType(binary.LittleEndian.Uint16(h[8:])) {
			continue
		}
		w.skipBoltCheck = true
		w.notes = append(w.notes, fmt.Sprintf("page %d: the meta page's header is damaged: bbolt's check, which "+
			"would crash on it, is left to this package's walk of the pages", i))
	}
	m := metas[use]
	if m.pageSize != uint32(ps) {
		w.problem(uint64(use), "says the page size is %d where the other meta page says %d", m.pageSize, ps)
		return w
	}
	w.hwm = m.hwm
	if m.hwm > uint64(size/ps) {
		w.problem(uint64(use), "the file (%d bytes) is shorter than the %d pages in use: it was truncated", size, m.hwm)
		return w
	}
	w.reached = make(pageSet, (max(m.hwm, 2)+63)/64)
	w.reached.add(0)
	w.reached.add(1)
	w.tree(m.root, uint64(use), nil, nil, ctxRoot)
	if m.freelist != boltNoFreelist {
		w.freelist(m.freelist)
	}
	return w
}

// validPageType reports whether flags is one page type, as bbolt's Page.FastCheck requires.
func validPageType(flags uint16) bool {
	switch flags {
	case boltBranchFlag, boltLeafFlag, boltMetaFlag, boltFreelistFlag:
		return true
	}
	return false
}

// readAtQuiet reads n bytes at off, if it can.
func (w *dbWalker) readAtQuiet(off, n int64) ([]byte, bool) {
	if off+n > w.size {
		return nil, false
	}
	if w.data != nil {
		return w.data[off : off+n : off+n], true
	}
	buf := make([]byte, n)
	if _, err := w.f.ReadAt(buf, off); err != nil {
		return nil, false
	}
	return buf, true
}

// InspectDB examines one of etcd's bbolt database files, a member's member/snap/db or a
// snapshot saved from etcd, read-only. Its pages are walked before bbolt reads them, so that
// damage is reported instead of crashing the process: bbolt panics in goroutines of its own on
// damaged pages, where no caller can recover. Findings that are not damage (a torn meta page
// bbolt does without) are left out; Inspect reports them in Report.Problems. Once ctx is done it
// stops between its steps and returns ctx's error, its findings incomplete and not to be used.
func InspectDB(ctx context.Context, path string) (DBState, error) {
	st, _ := inspectDB(ctx, path)
	if err := ctx.Err(); err != nil {
		return DBState{Path: path}, err
	}
	return st, nil
}

// inspectDB examines the database file at path; notes are findings that are not damage. Once
// ctx is done it stops between its steps (the walk of the pages, bbolt's check), its findings
// incomplete: Inspect then reports nothing.
func inspectDB(ctx context.Context, path string) (st DBState, notes []string) {
	st.Path = path
	defer func() {
		if p := recover(); p != nil {
			st.OK = false
			st.Err = fmt.Sprintf("%s: inspecting it panicked: %v", path, p)
		}
	}()
	defer func() {
		for i, n := range notes {
			notes[i] = path + ": " + n
		}
	}()
	fi, err := os.Stat(path)
	if err != nil {
		if !os.IsNotExist(err) {
			st.Present = true
			st.Err = fmt.Sprintf("%s: %v", path, err)
		}
		return st, nil
	}
	st.Present, st.Size, st.ModTime = true, fi.Size(), fi.ModTime()
	if !fi.Mode().IsRegular() {
		st.Err = fmt.Sprintf("%s: not a regular file", path)
		return st, nil
	}
	if fi.Size() == 0 {
		st.Err = fmt.Sprintf("%s: empty file", path)
		return st, nil
	}

	// Take bbolt's shared lock first (and keep it while reading): a running etcd holds it
	// exclusively, and a file being written cannot be judged.
	db, openErr := openBoltReadOnly(path)
	if errors.Is(openErr, bbolt.ErrTimeout) {
		st.InUse = true
		st.Err = fmt.Sprintf("%s: locked by another process (a running etcd?): not inspected", path)
		return st, nil
	}
	if db != nil {
		defer db.Close()
	}

	if ctx.Err() != nil {
		return st, nil
	}
	f, err := os.Open(path)
	if err != nil {
		st.Err = fmt.Sprintf("%s: %v", path, err)
		return st, nil
	}
	defer f.Close()
	w := walkDB(f, path, fi.Size())
	st.ConsistentIndex = beUint64(w.metaVals[consistentIndexKey])
	st.Term = beUint64(w.metaVals[termKey])
	st.CompactRevision = int64(beUint64(w.metaVals[finishedCompactKey]))
	st.ScheduledCompactRevision = int64(beUint64(w.metaVals[scheduledCompactKey]))
	st.Revision = max(int64(beUint64(w.lastKey)), st.CompactRevision)
	st.Voters, st.Learners = w.voters, w.learners

	problems := w.problems
	if openErr != nil {
		problems = append(problems, fmt.Sprintf("bbolt cannot open it: %v", openErr))
	}
	// bbolt's Check only on a file the walk found sound: see the top of this file.
	st.BoltCheckSkipped = w.skipBoltCheck && len(w.problems) == 0
	if ctx.Err() != nil {
		return st, nil
	}
	if db != nil && len(w.problems) == 0 && !w.skipBoltCheck {
		for _, p := range boltCheck(db) {
			problems = append(problems, "bbolt check: "+p)
			for _, m := range pageInBoltCheckRegexp.FindAllStringSubmatch(p, -1) {
				if id, err := strconv.ParseUint(m[1], 10, 64); err == nil {
					w.bad[id] = true
				}
			}
		}
	}
	for id := range w.bad {
		st.BadPages = append(st.BadPages, id)
	}
	sort.Slice(st.BadPages, func(i, j int) bool { return st.BadPages[i] < st.BadPages[j] })
	st.OK = openErr == nil && len(problems) == 0 && len(st.BadPages) == 0
	if !st.OK {
		st.Err = fmt.Sprintf("%s: %s", path, summarize(problems, maxDBProblems))
	}
	return st, w.notes
}

// openBoltReadOnly opens the database read-only, holding its shared lock.
func openBoltReadOnly(path string) (db *bbolt.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("bbolt panicked: %v", p)
		}
	}()
	return bbolt.Open(path, 0o400, &bbolt.Options{ReadOnly: true, Timeout: lockTimeout})
}

// boltCheck runs bbolt's consistency check, with messages that never quote keys or values.
func boltCheck(db *bbolt.DB) (problems []string) {
	defer func() {
		if p := recover(); p != nil {
			problems = append(problems, fmt.Sprintf("bbolt panicked: %v", p))
		}
	}()
	err := db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check(bbolt.WithKVStringer(redacted{})) {
			problems = append(problems, err.Error())
		}
		return nil
	})
	if err != nil {
		problems = append(problems, err.Error())
	}
	return problems
}

// redacted keeps etcd's keys and values out of bbolt's check messages.
type redacted struct{}

func (redacted) KeyToString([]byte) string   { return "<key>" }
func (redacted) ValueToString([]byte) string { return "<value>" }

// beUint64 reads a big-endian integer at the start of b (etcd's revisions and meta values), or 0.
func beUint64(b []byte) uint64 {
	if len(b) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func summarize(problems []string, n int) string {
	if len(problems) <= n {
		return strings.Join(problems, "; ")
	}
	return fmt.Sprintf("%s; and %d more", strings.Join(problems[:n], "; "), len(problems)-n)
}
