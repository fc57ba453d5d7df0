package doctor

import (
	"github.com/etcdguard/etcdguard/internal/redact"

	"context"
	"crypto/tls"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// Clock skew thresholds: etcd's leases and TLS validity checks both assume clocks agree.
const (
	skewWarn = 5 * time.Second
	skewCrit = time.Minute
)

// checkClocks compares this host's clock with each member's and the S3 targets', read from the
// Date header of an HTTP answer (one-second resolution).
func checkClocks(ctx context.Context, cfg etcdx.Config, statuses []etcdx.MemberStatus, targets []repository.Target, now func() time.Time) []Finding {
	tlsCfg, _ := cfg.TLS()
	var fs []Finding
	for _, st := range statuses {
		if st.Err != "" {
			continue
		}
		u := strings.TrimRight(st.Endpoint, "/") + "/health"
		if f, ok := skewFinding(ctx, u, "member "+nameOr(st), tlsCfg, now); ok {
			fs = append(fs, f)
		}
	}
	for _, t := range targets {
		tu, err := url.Parse(t.URL)
		if err != nil || tu.Scheme != "s3" {
			continue
		}
		if eu, err := url.Parse(tu.Query().Get("endpoint")); err != nil || eu.User != nil {
			continue // credentials in the endpoint are refused when the target is opened; never send them
		}
		ep := tu.Query().Get("endpoint")
		if ep == "" {
			region := tu.Query().Get("region")
			if region == "" {
				region = "us-east-1"
			}
			ep = "https://s3." + region + ".amazonaws.com"
		}
		if f, ok := skewFinding(ctx, ep, "S3 target "+t.Name, nil, now); ok {
			fs = append(fs, f)
		}
	}
	return fs
}

func skewFinding(ctx context.Context, u, subject string, tlsCfg *tls.Config, now func() time.Time) (Finding, bool) {
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Finding{}, false
	}
	sent := now()
	resp, err := client.Do(req)
	if err != nil {
		return Finding{}, false
	}
	resp.Body.Close()
	got := now()
	date, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return Finding{}, false
	}
	local := sent.Add(got.Sub(sent) / 2)
	skew := date.Sub(local)
	f := Finding{Check: "clock", Subject: subject,
		Evidence: []string{fmt.Sprintf("its clock %s, this host's %s (Date header of %s)", date.UTC().Format(time.RFC3339), local.UTC().Format(time.RFC3339), redact.URL(u))}}
	abs := time.Duration(math.Abs(float64(skew)))
	switch {
	case abs >= skewCrit:
		f.Severity = Critical
	case abs >= skewWarn:
		f.Severity = Warning
	}
	ahead := "ahead of"
	if skew < 0 {
		ahead = "behind"
	}
	f.Summary = fmt.Sprintf("clock %s %s this host's", abs.Round(time.Second), ahead)
	if f.Severity != OK {
		f.Summary += ": after a power cut, a host without a working RTC battery or NTP often starts with a wrong date, and certificates then look expired or not yet valid"
		f.Next = "check and fix time on both hosts: timedatectl; chronyc tracking (or ntpq -p)"
	}
	return f, true
}
