package agent

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdguard/etcdguard/internal/policy"
)

// PolicySettings configure the agent's checks of the 3-2-1 rule.
type PolicySettings struct {
	Rules policy.Rules
	// StateDir keeps the inventories of offline media (see policy.Check).
	StateDir string
	// Interval is how often the rule is checked; zero means DefaultPolicyInterval.
	Interval time.Duration
}

// DefaultPolicyInterval is how often the agent checks the 3-2-1 rule, besides after each
// snapshot it stores.
const DefaultPolicyInterval = 15 * time.Minute

// policyLoop checks the 3-2-1 rule at start, at every interval and after each stored snapshot,
// and keeps the last report for /metrics. A check that cannot run keeps the last report (its
// time says how old it is) and is logged.
func (a *Agent) policyLoop(ctx context.Context) {
	for {
		s := a.current()
		opts := policy.Options{Targets: s.Save.Targets, Rules: s.Policy.Rules, StateDir: s.Policy.StateDir, Now: a.opts.Now}
		rep, err := policy.Check(ctx, opts)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			a.lg.Warn("could not check the 3-2-1 rule", "error", err)
		default:
			a.mu.Lock()
			prev := a.policy
			a.policy = &rep
			a.mu.Unlock()
			if prev == nil || prev.Worst != rep.Worst {
				for _, f := range rep.Findings {
					if f.Severity != policy.OK {
						a.lg.Warn("3-2-1 rule: "+f.Message, "rule", f.Rule, "severity", f.Severity, "next", f.Next)
					}
				}
				a.lg.Info("3-2-1 rule checked", "worst", rep.Worst)
			}
		}
		iv := s.Policy.Interval
		if iv <= 0 {
			iv = DefaultPolicyInterval
		}
		t := time.NewTimer(iv)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-a.checkNow:
			t.Stop()
		}
	}
}

var (
	descPolicyOK = prometheus.NewDesc("etcdguard_policy_compliant",
		"1 while a rule of the 3-2-1 check holds (rule: copies, media, offline; a rule judged from an unmounted medium's inventory holds), 0 while it is broken.", []string{"rule"}, nil)
	descPolicyChecked = prometheus.NewDesc("etcdguard_policy_last_check_timestamp_seconds",
		"When the 3-2-1 rule was last checked (Unix time).", nil, nil)
	descOfflineAge = prometheus.NewDesc("etcdguard_offline_copy_age_seconds",
		"The age of the newest backup on any offline target, as of the last 3-2-1 check plus the time since (absent while none holds one).", nil, nil)
)

// collectPolicy exports the last 3-2-1 check.
func collectPolicy(rep *policy.Report, now time.Time, gauge func(*prometheus.Desc, float64, ...string)) {
	if rep == nil {
		return
	}
	gauge(descPolicyChecked, unix(rep.At))
	seen := map[string]bool{}
	for _, f := range rep.Findings {
		switch f.Rule {
		case "copies", "media", "offline": // the rules; readable and inventory are notes on them
		default:
			continue
		}
		if seen[f.Rule] {
			continue
		}
		seen[f.Rule] = true
		gauge(descPolicyOK, b2f(f.Severity != policy.Critical), f.Rule)
	}
	if rep.NewestOfflineAge >= 0 {
		gauge(descOfflineAge, (rep.NewestOfflineAge + now.Sub(rep.At)).Seconds()) // aged since the check
	}
}
