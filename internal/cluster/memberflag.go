package cluster

import (
	"fmt"
	"sort"
	"strings"
)

// memberFields maps the keys of a --member flag value (Member's YAML names) to the fields they set.
func memberFields(m *Member) map[string]*string {
	return map[string]*string{
		"name": &m.Name, "peer-url": &m.PeerURL, "client-url": &m.ClientURL, "data-dir": &m.DataDir,
		"host": &m.Host, "systemd-unit": &m.SystemdUnit, "static-pod-manifest": &m.StaticPodManifest,
		"start-command": &m.StartCommand, "stop-command": &m.StopCommand,
	}
}

// ParseMemberFlag reads a --member value: comma-separated key=value pairs with the keys of
// Member's YAML names. A value may itself hold commas (a shell command): a comma starts a new
// pair only when a known key and "=" follow it.
func ParseMemberFlag(v string) (Member, error) {
	var m Member
	fields := memberFields(&m)
	rest := v
	for rest != "" {
		key, after, ok := strings.Cut(rest, "=")
		field, known := fields[key]
		if !ok || !known {
			keys := make([]string, 0, len(fields))
			for k := range fields {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			return m, fmt.Errorf("--member %q: expected key=value with a key among %s", v, strings.Join(keys, ", "))
		}
		end := len(after)
		for i := 0; i < len(after); i++ {
			if after[i] == ',' {
				if k, _, ok := strings.Cut(after[i+1:], "="); ok && fields[k] != nil {
					end = i
					break
				}
			}
		}
		*field = after[:end]
		if end == len(after) {
			break
		}
		rest = after[end+1:]
	}
	return m, nil
}
