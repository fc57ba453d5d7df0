package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/restore"
)

// restoreVersionSkew decides whether the backup in the plain snapshot file fits the etcd
// version the restored member will run. The backup's version is what the snapshot records (its
// storage version, else its cluster version), else what its manifest says. The member's is the
// version recorded by the data dir being replaced (read-only), else --etcd-version, else unknown.
// Notes about what could not be read go to w.
func restoreVersionSkew(ctx context.Context, w io.Writer, o *restoreOptions, plain string, m *repository.Manifest) (restore.VersionSkew, error) {
	bv, err := restore.ReadDBVersions(ctx, plain)
	if err != nil {
		return restore.VersionSkew{}, err
	}
	backup := bv.Version()
	if backup == "" && m != nil {
		backup = firstNonEmpty(m.Status.Version, m.EtcdVersion)
	}
	target := ""
	tv, found, err := restore.ReadDataDirVersions(ctx, o.dataDir)
	switch {
	case err != nil:
		fmt.Fprintf(w, "note: the etcd version of the data dir being replaced could not be read (%v)\n", err)
	case found:
		target = tv.Version()
	}
	switch {
	case target == "":
		target = o.etcdVersion
	case o.etcdVersion != "" && o.etcdVersion != target:
		fmt.Fprintf(w, "note: --etcd-version %s is not used: the data dir being replaced records etcd %s\n", o.etcdVersion, target)
	}
	return restore.CheckVersionSkew(backup, target, o.allowVersionSkew), nil
}
