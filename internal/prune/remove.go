package prune

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/failpoint"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// The step boundaries of a removal, where a crash must leave a target readers handle and the next
// prune finishes (docs/design.md, "Retention and pruning"). The segment steps are crossed once per
// segment.
const (
	stepSegmentManifest = "prune/segment-manifest-removed"
	stepSegmentData     = "prune/segment-data-removed"
	stepBaseManifest    = "prune/base-manifest-removed"
	stepBaseData        = "prune/base-data-removed"
	stepChainEnd        = "prune/chain-end-removed"
)

// chainOrder returns the objects of a chain in the order they are removed: each segment, newest
// first, its manifest before its data (what is left is always a shorter valid chain, and a data
// object without its manifest, which readers ignore); then whatever else is in the folder; the
// end record last (a chain that lost its end record early could be taken for open, and a writer
// would continue it).
func chainOrder(l repository.ChainListing) []string {
	segs := append([]repository.SegmentRef(nil), l.Segments...)
	sort.Slice(segs, func(i, j int) bool {
		if segs[i].First != segs[j].First {
			return segs[i].First > segs[j].First
		}
		return segs[i].Last > segs[j].Last
	})
	var out []string
	seen := map[string]bool{}
	for _, s := range segs {
		out = append(out, s.ManifestName())
		seen[s.ManifestName()] = true
		for _, d := range l.DataOf(s) {
			out = append(out, d)
			seen[d] = true
		}
	}
	end := repository.ChainEndName(l.Base)
	var rest []string
	for name := range l.Sizes {
		if !seen[name] && name != end {
			rest = append(rest, name)
		}
	}
	sort.Strings(rest)
	out = append(out, rest...)
	if l.Ended {
		out = append(out, end)
	}
	return out
}

// removeBackup removes one backup and its chain, after checking that the lock is still ours and,
// on a fresh listing, that the storage locks none of it: its chain's segments newest first, then
// its manifest, then the rest of its folder, then the rest of the chain and its end record.
func (p *target) removeBackup(ctx context.Context, c *candidate, br *BackupReport) error {
	if err := p.lock.Refresh(ctx); err != nil {
		if errors.Is(err, backend.ErrNotExist) {
			err = fmt.Errorf("%w (%w): %w: another run judged it stale and took it over; nothing more is removed", ErrLockLost, repository.ErrLocked, err)
		}
		br.Action = ActionNotRemoved
		return err
	}
	// Listed again: since the decision a shipper may have added to the chain.
	fresh, err := p.look(ctx, c.m)
	if err != nil {
		br.Action = ActionNotRemoved
		return err
	}
	switch {
	case fresh.chainState() == ChainOpen:
		br.Action, br.Reasons = ActionKeep, []string{"its delta chain became open while prune ran: kept"}
		p.rep.Kept++
		return nil
	case fresh.checkErr != nil:
		br.Action, br.Reasons = ActionKeep, []string{"no rule keeps it, but the storage's lock on it could not be read: kept"}
		p.rep.Kept++
		p.rep.Errors = append(p.rep.Errors, newError(c.m.ID, fresh.checkErr))
		return nil
	case fresh.locked:
		until := fresh.until
		br.Action, br.Reasons, br.LockedUntil = ActionKeep, []string{"locked by the storage (object lock or legal hold) since the decision: kept"}, &until
		p.rep.Kept++
		p.rep.LockedSkipped++
		return nil
	}
	c = fresh
	br.Chain, br.Segments = c.chainState(), len(c.chain.Segments)
	br.Action = ActionFailed
	freed := int64(0)
	remove := func(name string, size int64) error {
		if err := p.repo.Backend().Remove(ctx, name); err != nil {
			return fmt.Errorf("target %s: remove %s of backup %s: %w", p.repo.Target.Name, name, c.m.ID, err)
		}
		freed += size
		p.rep.BytesRemoved += size
		return nil
	}
	chain := chainOrder(c.chain)
	end := repository.ChainEndName(c.m.ID)
	// The segments (each manifest, then its data); the rest of the chain waits for the base.
	i := 0
	for ; i < len(chain); i++ {
		s, ok := repository.ParseSegmentManifestName(chain[i])
		if !ok {
			break
		}
		if err := remove(chain[i], c.chain.Sizes[chain[i]]); err != nil {
			return err
		}
		failpoint.Here(stepSegmentManifest)
		for _, d := range c.chain.DataOf(s) {
			if err := remove(d, c.chain.Sizes[d]); err != nil {
				return err
			}
			i++
		}
		failpoint.Here(stepSegmentData)
	}
	manifest := repository.ManifestName(c.m.ID)
	if err := remove(manifest, c.folder[manifest]); err != nil {
		return err
	}
	failpoint.Here(stepBaseManifest)
	names := make([]string, 0, len(c.folder))
	for name := range c.folder {
		if name != manifest {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		if err := remove(name, c.folder[name]); err != nil {
			return err
		}
	}
	failpoint.Here(stepBaseData)
	for ; i < len(chain); i++ {
		if err := remove(chain[i], c.chain.Sizes[chain[i]]); err != nil {
			return err
		}
		if chain[i] == end {
			failpoint.Here(stepChainEnd)
		}
	}
	p.removeFolders(ctx, repository.ChainPrefix(c.m.ID), repository.BackupPrefix(c.m.ID))
	br.Action, br.Bytes = ActionRemoved, freed
	p.rep.Removed++
	p.o.Logger.Info("backup removed", "target", p.repo.Target.Name, "backup", c.m.ID, "segments", len(c.chain.Segments), "bytes", freed)
	return nil
}

// removeFolders removes folders left empty, on backends that keep folders (a local disk).
func (p *target) removeFolders(ctx context.Context, prefixes ...string) {
	fr, ok := backend.As[backend.FolderRemover](p.repo.Backend())
	if !ok {
		return
	}
	for _, prefix := range prefixes {
		if err := fr.RemoveFolder(ctx, prefix); err != nil {
			p.o.Logger.Warn("could not remove an empty folder", "target", p.repo.Target.Name, "folder", prefix, "error", err)
		}
	}
}

// sweepOrphans removes the chain folders whose base's manifest is gone (a prune stopped after it
// removed the base and before the end record), in the order of the deletion protocol. Only an
// ended chain is removed: one without an end record may be a writer's or a shipper's at work (a
// shipper sends segments to a target that may get its base later, by `snapshot copy`), and is
// left with a note. A dry run only reports them.
func (p *target) sweepOrphans(ctx context.Context) error {
	bases, err := p.repo.ChainBases(ctx)
	if err != nil {
		return err
	}
	for _, base := range bases {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch _, err := p.repo.Backend().Stat(ctx, repository.ManifestName(base)); {
		case err == nil, errors.Is(err, backend.ErrNotObject):
			continue // the base is there, or something odd is under its name: left alone
		case !errors.Is(err, backend.ErrNotExist):
			return err
		}
		l, err := p.repo.ListChain(ctx, base)
		if err != nil {
			return err
		}
		if l.Empty() {
			continue
		}
		prefix := repository.ChainPrefix(base)
		if !l.Ended {
			p.rep.Notes = append(p.rep.Notes, fmt.Sprintf("%s has no base backup and no end record: left (a delta writer or shipper may still add to it, and its base may be copied in later)", prefix))
			continue
		}
		names := chainOrder(l)
		locked, until, err := p.lockedAny(ctx, names)
		switch {
		case err != nil:
			p.rep.Errors = append(p.rep.Errors, newError("", err))
			continue
		case locked:
			p.rep.Notes = append(p.rep.Notes, fmt.Sprintf("%s has no base backup; locked by the storage (until %s): left", prefix, until.Format(time.RFC3339)))
			continue
		}
		if p.o.DryRun {
			p.rep.Swept = append(p.rep.Swept, prefix)
			continue
		}
		if err := p.lock.Refresh(ctx); err != nil {
			return err
		}
		for _, name := range names {
			if err := p.repo.Backend().Remove(ctx, name); err != nil {
				return fmt.Errorf("target %s: remove %s of a chain without base: %w", p.repo.Target.Name, name, err)
			}
			p.rep.BytesRemoved += l.Sizes[name]
			switch _, isManifest := repository.ParseSegmentManifestName(name); {
			case isManifest:
				failpoint.Here(stepSegmentManifest)
			case name == repository.ChainEndName(base):
				failpoint.Here(stepChainEnd)
			}
		}
		p.removeFolders(ctx, prefix)
		p.rep.Swept = append(p.rep.Swept, prefix)
		p.o.Logger.Info("chain without base removed", "target", p.repo.Target.Name, "chain", prefix, "objects", len(names))
	}
	return p.sweepEmptyFolders(ctx, bases)
}

// sweepEmptyFolders removes the empty chain folders of bases that are gone, on a backend that
// keeps folders: what a prune stopped after its last removal and before the folder's leaves.
// (A shipper that is just then creating the folder for a base the target lacks fails that copy,
// and sends it again at its next round.)
func (p *target) sweepEmptyFolders(ctx context.Context, bases []string) error {
	fr, ok := backend.As[backend.FolderRemover](p.repo.Backend())
	if !ok || p.o.DryRun {
		return nil
	}
	folders, err := fr.Folders(ctx, repository.ChainsPrefix)
	if err != nil {
		return fmt.Errorf("target %s: %w", p.repo.Target.Name, err)
	}
	listed := map[string]bool{}
	for _, b := range bases {
		listed[b] = true
	}
	for _, prefix := range folders {
		base := strings.TrimSuffix(strings.TrimPrefix(prefix, repository.ChainsPrefix), "/")
		if !repository.ValidID(base) || listed[base] {
			continue
		}
		if _, err := p.repo.Backend().Stat(ctx, repository.ManifestName(base)); !errors.Is(err, backend.ErrNotExist) || errors.Is(err, backend.ErrNotObject) {
			continue
		}
		if err := fr.RemoveFolder(ctx, prefix); err != nil {
			return fmt.Errorf("target %s: %w", p.repo.Target.Name, err)
		}
	}
	return nil
}
