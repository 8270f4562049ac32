//go:build e2e

package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/klauspost/compress/zstd"

	"github.com/kache-planner/kache-planner/internal/testenv"
	"github.com/kache-planner/kache-planner/shared/layout"
)

// badInputToken is central's bearer token in the bad-input scenario; the
// sidecar is given it to talk to central.
const badInputToken = "bad-input-central-token"

// badInputMarker names every file a traversal key would create if one got
// through: found anywhere after the run, something escaped.
const badInputMarker = "kache-badinput-escape"

// badInputSeed seeds the fuzz loop; KACHE_BADINPUT_SEED replays another run.
func badInputSeed(t *testing.T) uint64 {
	if v := os.Getenv("KACHE_BADINPUT_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		must(t, err)
		return n
	}
	return 20260112
}

// fuzzReq is one request as it goes on the wire, and what may come back.
type fuzzReq struct {
	surface string
	what    string // a short description for error messages
	method  string
	target  string // request target, sent as is
	header  [][2]string
	body    []byte
	// length is the Content-Length sent: -1 the body's length, -2 none
	// (chunked or no body), anything else as given.
	length int
	// rawLength replaces the Content-Length header's value when set.
	rawLength string
	// mustFail: a 2xx answer is wrong (no or wrong credentials, a body
	// that cannot be valid).
	mustFail bool
	// dropOK: the client broke the framing (a body shorter than declared,
	// an unterminated chunked body); the server may close without
	// answering.
	dropOK bool
	// s3: errors must be S3 XML.
	s3 bool
}

func (r *fuzzReq) wire(host string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", r.method, r.target, host)
	for _, h := range r.header {
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
	}
	switch {
	case r.rawLength != "":
		fmt.Fprintf(&b, "Content-Length: %s\r\n", r.rawLength)
	case r.length == -1:
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(r.body))
	case r.length >= 0:
		fmt.Fprintf(&b, "Content-Length: %d\r\n", r.length)
	}
	b.WriteString("Connection: close\r\n\r\n")
	b.Write(r.body)
	return b.Bytes()
}

// fuzzAnswer is what one exchange gave.
type fuzzAnswer struct {
	status int
	body   []byte
	err    error // no answer that could be read
}

// exchangeRaw writes req on a new connection, closes the write side and
// reads one response. A write the server cut short (it answered early and
// closed) still reads its answer.
func exchangeRaw(addr string, req []byte, method string) fuzzAnswer {
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return fuzzAnswer{err: err}
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	_, werr := conn.Write(req)
	_ = conn.(*net.TCPConn).CloseWrite()
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	for err == nil && resp.StatusCode/100 == 1 {
		// An interim answer (100 Continue): the real one follows.
		resp, err = http.ReadResponse(br, &http.Request{Method: method})
	}
	if err != nil {
		if werr != nil {
			err = fmt.Errorf("%w (write: %v)", err, werr)
		}
		return fuzzAnswer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fuzzAnswer{status: resp.StatusCode, body: b, err: fmt.Errorf("read body: %w", err)}
	}
	return fuzzAnswer{status: resp.StatusCode, body: b}
}

// badInputTally counts answers by surface and class, and keeps the
// unexpected ones.
type badInputTally struct {
	mu       sync.Mutex
	requests map[string]int            // surface -> requests
	classes  map[string]map[string]int // surface -> class -> count
	errors   []string
	nErrors  int
}

func newBadInputTally() *badInputTally {
	return &badInputTally{requests: map[string]int{}, classes: map[string]map[string]int{}}
}

func (b *badInputTally) count(surface, class string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.requests[surface]++
	if b.classes[surface] == nil {
		b.classes[surface] = map[string]int{}
	}
	b.classes[surface][class]++
}

func (b *badInputTally) fail(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nErrors++
	if len(b.errors) < 40 {
		b.errors = append(b.errors, fmt.Sprintf(format, args...))
	}
}

func (b *badInputTally) total() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, v := range b.requests {
		n += v
	}
	return n
}

// judge classifies an answer and records it; it reports whether the
// answer was acceptable.
func (b *badInputTally) judge(r *fuzzReq, a fuzzAnswer) bool {
	class := ""
	ok := true
	why := ""
	switch {
	case a.err != nil && a.status == 0:
		class = "dropped"
		if !r.dropOK {
			ok, why = false, "no answer: "+a.err.Error()
		}
	case a.status >= 200 && a.status < 300:
		class = "2xx"
		if r.mustFail {
			ok, why = false, "accepted"
		}
	case a.status >= 300 && a.status < 400:
		class = "3xx"
		if a.status != http.StatusNotModified {
			ok, why = false, "redirect"
		}
	case a.status >= 400 && a.status < 500:
		class = strconv.Itoa(a.status)
	case a.status == http.StatusInternalServerError:
		class = "500"
		ok, why = false, "internal error"
	case a.status >= 500:
		class = strconv.Itoa(a.status)
	default:
		class = "other"
		ok, why = false, "status"
	}
	if ok && a.status >= 400 && r.method != http.MethodHead {
		// An error carries its reason.
		switch {
		case len(bytes.TrimSpace(a.body)) == 0:
			ok, why = false, "error without a reason"
		case r.s3 && xmlCode(a.body) == "":
			ok, why = false, "error that is not S3 XML"
		}
	}
	if ok && a.err != nil && !r.dropOK {
		ok, why = false, a.err.Error()
	}
	b.count(r.surface, class)
	if !ok {
		body := a.body
		if len(body) > 200 {
			body = body[:200]
		}
		target := r.target
		if len(target) > 120 {
			target = target[:120] + "..."
		}
		var hdr []string
		for _, h := range r.header {
			hdr = append(hdr, h[0]+": "+clip(h[1], 100))
		}
		b.fail("%s %s %s %q (%d body bytes, length %d %q, headers %s): %s: status %d %q", r.surface, r.method, target, r.what,
			len(r.body), r.length, r.rawLength, clip(strings.Join(hdr, " | "), 1500), why, a.status, body)
	}
	return ok
}

// TestFleetBadInput is issue 12's bad_input scenario: real MinIO, a real
// central (bearer token set, crawling the bucket) and a real sidecar (S3
// surface on, reporting to central). A seeded fuzz loop sends every
// surface (central, the sidecar's planner surface, its S3 surface)
// thousands of mutated and garbage requests: odd methods, traversal and
// encoded paths, long and non-UTF-8 keys, hostile headers, truncated,
// mistyped, huge-numbered and deeply nested JSON, declared lengths the body
// does not have, wrong bearer tokens and broken SigV4 (wrong secret, wrong
// date, expired presign, tampered signed headers). Then the named cases:
// wrong tokens to central; correctly signed uploads of a truncated pack,
// packs with garbage or foreign meta.json, malformed build manifests and
// entry manifests through the sidecar; malformed manifests POSTed to
// central; malformed Cargo.lock files given to `kache-sidecar warm`.
//
// Every answer is a 4xx/5xx with a reason (S3 XML on the S3 surface; no
// 500) or a 2xx where one is right; a connection closes without an answer
// only when the client broke the framing. Afterwards every process is alive
// and healthy, no log holds a panic, a goroutine dump or a race, no file
// appeared outside the sidecar's store, central's database and MinIO's data
// directory (and none named by a traversal key anywhere), the bucket holds
// exactly the correctly signed uploads, and central learnt nothing from the
// malformed input: no manifest or entry stored, no plan for its crates.
//
// A correctly signed truncated pack is stored, as S3 stores any object
// whose signature and Content-MD5 hold: the sidecar cannot refuse bytes
// whose size and digest the client vouched for. It is not reported to
// central (its zstd frame does not end, so its meta.json does not count),
// and a GET through the sidecar serves exactly the bucket's bytes with the
// bucket's ETag, their MD5: never different bytes under that checksum. The
// client's restore then refuses it, as it would from the bucket.
func TestFleetBadInput(t *testing.T) {
	tally := newBadInputTally()
	figures := map[string]any{}
	recordScenario(t, "bad_input", func(r *scenarioResult) {
		tally.mu.Lock()
		defer tally.mu.Unlock()
		n := 0
		for s, v := range tally.requests {
			n += v
			r.set("requests_"+s, v)
			for class, c := range tally.classes[s] {
				r.set(s+"_"+class, c)
			}
		}
		r.set("requests", n)
		r.Errors = intp(tally.nErrors)
		for k, v := range figures {
			r.set(k, v)
		}
	})
	t.Setenv("KACHE_SIDECAR_CENTRAL_TOKEN", badInputToken)
	ctx := context.Background()
	root := filepath.Dir(t.TempDir())
	o := startMinio(t)

	// Central: token, the bucket crawled every 2 s (so it reads what the
	// malformed uploads put there too).
	dbDir := filepath.Join(t.TempDir(), "db")
	port := testenv.FreePort(t)
	central := &replica{addr: fmt.Sprintf("http://127.0.0.1:%d", port)}
	central.p = testenv.Start(t, "kache-service", append(o.env(), "KACHE_LOG=info", "KACHE_PLANNER_TOKEN="+badInputToken), serviceBin(t),
		"--bind", fmt.Sprintf("127.0.0.1:%d", port), "--db-path", dbDir,
		"--s3-bucket", testBucket, "--s3-endpoint", o.endpoint, "--s3-crawl-interval", "2s")
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if !waitUntil(wctx, 50*time.Millisecond, func() bool { return central.status("/readyz") == 200 }) {
		t.Fatalf("central not ready:\n%s", central.p.Tail(20))
	}
	centralHost := strings.TrimPrefix(central.addr, "http://")
	sc := startS3Sidecar(t, o, central.addr)
	k := newKacheS3(t, sc.endpoint, testBucket, localAccessKey, localSecretKey)

	// The correctly signed uploads, whose objects the bucket must hold at
	// the end (key -> bytes).
	uploaded := map[string][]byte{}
	put := func(key string, body []byte, contentType string) {
		t.Helper()
		if err := k.Put(ctx, key, body, contentType); err != nil {
			t.Fatalf("correctly signed PUT %s: %v", key, err)
		}
		uploaded[key] = body
	}

	// Control: a real pack and its entry manifest reach the bucket, the
	// store and central, so that what does not reach them below means
	// something.
	ctl := newKacheEntry(t, "bi_control", 1, 32<<10)
	put(ctl.packKey(), ctl.pack, "")
	put(ctl.manifestKey(), ctl.manifest, "application/json")
	put("ctl/plain.bin", []byte("a plain object"), "")
	if !waitUntil(wctx, 200*time.Millisecond, func() bool {
		st, p := badInputPlan(central, "bi_control")
		return st == 200 && len(p) == 1 && p[0] == ctl.key
	}) {
		t.Fatalf("central does not plan the control pack reported by the sidecar:\n%s", sc.p.Tail(20))
	}
	reported := func(kind, result string) float64 {
		return sc.metricValue(t, fmt.Sprintf(`kache_sidecar_report_total{kind=%q,result=%q}`, kind, result))
	}
	ingested := func() (float64, float64) {
		return central.metricValue(t, `kache_planner_manifests_total{outcome="inserted"}`), central.metricValue(t, "kache_planner_manifest_entries_total")
	}
	// Let the control's report settle before taking the baseline.
	time.Sleep(2500 * time.Millisecond)
	sent0 := reported("pack", "sent") + reported("manifest", "sent") + reported("shard", "sent")
	inserted0, entries0 := ingested()
	timelines0 := central.metricValue(t, `kache_planner_build_timelines_total{outcome="inserted"}`)

	// Warm workspaces are made now, so that the snapshot holds them.
	warmCases := badLockFiles()
	warmDirs := map[string]string{}
	warmStore := filepath.Join(t.TempDir(), "warm-store")
	for _, c := range warmCases {
		ws := t.TempDir()
		c.write(t, filepath.Join(ws, "Cargo.lock"))
		warmDirs[c.name] = ws
	}

	// Where files may appear: the store, central's database, MinIO's data.
	minioDir := ""
	dirs, err := os.ReadDir(root)
	must(t, err)
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(root, d.Name(), "data", ".minio.sys")); err == nil {
			minioDir = filepath.Join(root, d.Name(), "data")
		}
	}
	if minioDir == "" {
		t.Fatalf("MinIO's data directory is not under %s", root)
	}
	allowed := []string{sc.store, dbDir, minioDir}
	before := treeSnapshot(t, root, allowed)
	tmpBefore := dirNames(t, filepath.Dir(root))

	seed := badInputSeed(t)
	t.Logf("fuzz seed %d (KACHE_BADINPUT_SEED replays it)", seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	fz := &fuzzer{
		rng: rng, k: k, wrongK: newKacheS3(t, sc.endpoint, testBucket, localAccessKey, "not-the-secret"),
		unknownK: newKacheS3(t, sc.endpoint, testBucket, "no-such-access-key", localSecretKey),
		s3Host:   sc.s3, centralHost: centralHost, plannerHost: sc.addr,
	}

	// 1. The fuzz loop: one phase per surface, so that what each lets
	// through to central can be counted.
	type phase struct {
		surface, addr string
		gen           func() *fuzzReq
		share         time.Duration
		want          int
	}
	budget := 45 * time.Second
	phases := []phase{
		{"central", centralHost, fz.central, budget / 3, 1200},
		{"planner", sc.addr, fz.planner, budget / 3, 1200},
		{"s3", sc.s3, fz.s3, budget / 3, 1500},
	}
	centralPlans := func() float64 { return metricFamilySum(t, central.addr, "kache_planner_requests_total") }
	fuzzStart := time.Now()
	for _, ph := range phases {
		plans0 := centralPlans()
		okPlans := 0
		var okMu sync.Mutex
		deadline := time.Now().Add(ph.share)
		reqs := make(chan *fuzzReq)
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := range reqs {
					a := exchangeRaw(ph.addr, r.wire(ph.addr), r.method)
					tally.judge(r, a)
					if ph.surface == "planner" && a.status/100 == 2 && strings.Contains(r.target, "prefetch-plan") {
						okMu.Lock()
						okPlans++
						okMu.Unlock()
					}
				}
			}()
		}
		n := 0
		for ; n < ph.want && time.Now().Before(deadline); n++ {
			reqs <- ph.gen()
		}
		close(reqs)
		wg.Wait()
		figures["fuzz_"+ph.surface] = n
		if ph.surface == "planner" {
			// A malformed plan request is refused by the sidecar, not
			// passed to central: central saw at most the sidecar's good
			// ones, each planned once per profile the sidecar splits
			// kache's profile-less intent by (debug and release).
			const perPlan = 2
			if d := centralPlans() - plans0; d > float64(perPlan*okPlans) {
				t.Errorf("central answered %v plan requests while the sidecar answered %d valid ones: malformed intents forwarded", d, okPlans)
			}
			figures["planner_plans_forwarded"] = okPlans
		}
		if sc.p.Exited() || central.p.Exited() {
			t.Fatalf("a process died during the %s fuzz:\ncentral:\n%s\nsidecar:\n%s", ph.surface, central.p.Tail(30), sc.p.Tail(30))
		}
	}
	figures["fuzz_seconds"] = time.Since(fuzzStart).Seconds()
	if n := tally.total(); n < 1000 {
		t.Errorf("only %d fuzz requests in the time budget", n)
	}

	// 2. Wrong bearer tokens to central's guarded routes.
	for _, route := range []string{"/v1/prefetch-plan", "/v2/prefetch-plan", "/v1/manifests", "/v1/missing-keys", "/v1/build-timelines"} {
		for _, auth := range []string{"Bearer wrong-token", "Bearer " + badInputToken + "x", "Bearer " + badInputToken[:len(badInputToken)-1],
			"Basic " + base64.StdEncoding.EncodeToString([]byte("kache:"+badInputToken)), "Bearer", "Token " + badInputToken, ""} {
			r := &fuzzReq{surface: "central", what: "wrong token " + strconv.Quote(auth), method: http.MethodPost, target: route, length: -1,
				header: [][2]string{{"Content-Type", "application/json"}}, body: []byte(intentJSON("bi_token")), mustFail: true}
			if auth != "" {
				r.header = append(r.header, [2]string{"Authorization", auth})
			}
			a := exchangeRaw(centralHost, r.wire(centralHost), r.method)
			if tally.judge(r, a) && a.status != http.StatusUnauthorized {
				tally.fail("central %s with %q: status %d, want 401", route, auth, a.status)
			}
		}
	}

	// 3. Correctly signed uploads of broken packs through the sidecar.
	packCases := brokenPacks(t)
	for _, pc := range packCases {
		put(pc.key, pc.body, "")
	}
	// Malformed build manifests and entry manifests, correctly signed: S3
	// stores them; central must learn nothing from them.
	for i, m := range malformedManifests() {
		put(layout.BuildManifestKey("artifacts", fmt.Sprintf("bad-input/%02d-%s", i, m.name)), m.body, "application/json")
		put(layout.EntryManifestKey("artifacts", "bi_entry", fmt.Sprintf("%064x", i+1)), m.body, "application/json")
	}
	// The same manifests POSTed to central with its token.
	for _, m := range malformedManifests() {
		r := &fuzzReq{surface: "central", what: "malformed manifest " + m.name, method: http.MethodPost, target: "/v1/manifests", length: -1,
			header: [][2]string{{"Content-Type", "application/json"}, {"Authorization", "Bearer " + badInputToken}}, body: m.body, mustFail: true}
		a := exchangeRaw(centralHost, r.wire(centralHost), r.method)
		if tally.judge(r, a) && a.status/100 != 4 {
			tally.fail("malformed manifest %s to central: status %d, want 4xx", m.name, a.status)
		}
	}

	// 4. Malformed Cargo.lock files given to warm.
	warmFailures := 0
	for _, c := range warmCases {
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		cmd := exec.CommandContext(cctx, sidecarBin(t), "warm", "--workspace", warmDirs[c.name], "--planner-listen", sc.addr,
			"--store-dir", warmStore, "--progress", "never", "--timeout", "20s")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		ccancel()
		code := cmd.ProcessState.ExitCode()
		out := stdout.String() + stderr.String()
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		last := lines[len(lines)-1]
		switch {
		case err == nil || code <= 0:
			tally.fail("warm with %s: exit %d (%v), want a failure:\n%s", c.name, code, err, out)
		case hasCrashText(out):
			tally.fail("warm with %s crashed:\n%s", c.name, clip(out, 2000))
		case !strings.HasPrefix(last, "kache-sidecar warm: ") || !strings.Contains(last, "Cargo.lock") || len(last) > 600:
			tally.fail("warm with %s: exit %d, last line %q, want one clear line naming Cargo.lock:\n%s", c.name, code, clip(last, 700), clip(out, 2000))
		default:
			tally.count("warm", "exit_"+strconv.Itoa(code))
			continue
		}
		tally.count("warm", "bad")
		warmFailures++
	}
	if entries, err := os.ReadDir(warmStore); err == nil && len(entries) > 0 {
		t.Errorf("warm with a malformed Cargo.lock wrote into its store directory: %v", entries)
	}

	// Let the reporter flush (2 s) and central crawl the bucket (2 s) a
	// couple of times.
	time.Sleep(6 * time.Second)

	// Nothing malformed reached central.
	if d := reported("pack", "sent") + reported("manifest", "sent") + reported("shard", "sent") - sent0; d != 0 {
		t.Errorf("the sidecar sent %v reports to central after the control: something malformed was forwarded", d)
	}
	inserted1, entries1 := ingested()
	if inserted1 != inserted0 || entries1 != entries0 {
		t.Errorf("central stored %v manifests with %v entries from malformed input", inserted1-inserted0, entries1-entries0)
	}
	if v := central.metricValue(t, `kache_planner_build_timelines_total{outcome="inserted"}`); v != timelines0 {
		t.Errorf("central stored %v build timelines from malformed input", v-timelines0)
	}
	// (Entry manifests are not read for what they say: a garbage one at a
	// valid key still names an object the bucket holds, so bi_entry's keys
	// may be planned from the listing.)
	crates := []string{"bi_manifest", "bi_token", "bi_fuzz"}
	names := map[string]string{strings.Repeat("ab", 32): "bi_manifest entry"}
	for _, pc := range packCases {
		crates = append(crates, pc.crate)
		crates = append(crates, pc.claims...)
		names[pc.cacheKey] = pc.name
	}
	names[newKacheEntry(t, "bi_claimed", 18, 1024).key] = "the entry a foreign meta.json names"
	if st, p := badInputPlan(central, crates...); st != 200 || len(p) != 0 {
		var what []string
		for _, k := range p {
			what = append(what, names[k]+" "+k)
		}
		t.Errorf("central plans %v for the malformed input's crates (status %d)", what, st)
	}
	figures["report_invalid"] = reported("pack", "invalid") + reported("manifest", "invalid") + reported("shard", "invalid")

	// The truncated pack: the bucket's bytes, the bucket's ETag, through
	// the sidecar; kache's restore refuses it.
	for _, pc := range packCases {
		got, err := k.Get(ctx, pc.key)
		if err != nil {
			t.Errorf("GET %s (%s) through the sidecar: %v", pc.name, pc.key, err)
			continue
		}
		stored, info := minioBytes(t, o, testBucket, pc.key)
		sum := md5.Sum(got)
		if !bytes.Equal(got, stored) || !bytes.Equal(got, pc.body) || hex.EncodeToString(sum[:]) != info.ETag {
			t.Errorf("GET %s through the sidecar: %d bytes (MD5 %x), the bucket holds %d (ETag %s), %d were put",
				pc.name, len(got), sum, len(stored), info.ETag, len(pc.body))
		}
		h, err := k.newRequest(ctx, http.MethodHead, k.objectPath(pc.key), nil, nil, unsignedPayload, nil)
		must(t, err)
		resp, err := k.http.Do(h)
		must(t, err)
		resp.Body.Close()
		if etag := strings.Trim(resp.Header.Get("ETag"), `"`); etag != info.ETag {
			t.Errorf("HEAD %s: ETag %q, the bucket's is %q", pc.name, etag, info.ETag)
		}
		if pc.restoreFails && checkPack(got, pc.crate, pc.cacheKey) == nil {
			t.Errorf("%s: kache's restore would accept it", pc.name)
		}
	}

	// The bucket holds exactly the correctly signed uploads.
	keys := minioKeys(t, o, testBucket, "")
	slices.Sort(keys)
	want := slices.Sorted(func(yield func(string) bool) {
		for k := range uploaded {
			if !yield(k) {
				return
			}
		}
	})
	if !slices.Equal(keys, want) {
		t.Errorf("MinIO holds %d objects, the correctly signed uploads are %d:\nextra   %v\nmissing %v", len(keys), len(want), setMinus(keys, want), setMinus(want, keys))
	}
	for key, body := range uploaded {
		if got, _ := minioBytes(t, o, testBucket, key); !bytes.Equal(got, body) {
			t.Errorf("%s: MinIO holds %d bytes, %d were put", key, len(got), len(body))
		}
	}
	for up := range o.client.ListIncompleteUploads(ctx, testBucket, "", true) {
		t.Errorf("incomplete upload left in MinIO: %s", up.Key)
	}
	figures["bucket_objects"] = len(keys)

	// No file outside the store, the database and MinIO's data; none
	// named by a traversal key anywhere.
	after := treeSnapshot(t, root, allowed)
	if added := setMinus(after, before); len(added) > 0 {
		t.Errorf("files appeared outside the store, the database and MinIO's data: %v", added)
	}
	if removed := setMinus(before, after); len(removed) > 0 {
		t.Errorf("files disappeared outside the store, the database and MinIO's data: %v", removed)
	}
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), badInputMarker) {
			t.Errorf("a traversal key wrote %s", p)
		}
		return nil
	})
	for _, name := range setMinus(dirNames(t, filepath.Dir(root)), tmpBefore) {
		if strings.Contains(name, badInputMarker) {
			t.Errorf("a traversal key wrote %s", filepath.Join(filepath.Dir(root), name))
		}
	}
	if _, err := os.Lstat(filepath.Join("/", badInputMarker)); err == nil {
		t.Errorf("a traversal key wrote /%s", badInputMarker)
	}

	// Everything still serves, and no log holds a crash.
	if central.p.Exited() || sc.p.Exited() {
		t.Fatalf("a process exited: central %v, sidecar %v", central.p.Exited(), sc.p.Exited())
	}
	for _, h := range []string{central.addr, "http://" + sc.addr} {
		if st := (&replica{addr: h}).status("/healthz"); st != 200 {
			t.Errorf("%s/healthz: %d after the bad input", h, st)
		}
	}
	if got, err := k.Get(ctx, ctl.packKey()); err != nil || !bytes.Equal(got, ctl.pack) {
		t.Errorf("the S3 surface no longer serves the control pack: %v", err)
	}
	for _, p := range []*testenv.Proc{central.p, sc.p} {
		b, err := os.ReadFile(p.Log)
		must(t, err)
		if hasCrashText(string(b)) {
			t.Errorf("%s's log holds a crash:\n%s", p.Name, clip(crashContext(string(b)), 3000))
		}
	}
	if recs := sc.logRecords(t, "s3 request failed"); len(recs) > 0 {
		for _, r := range recs {
			if r["level"] == "ERROR" {
				tally.fail("the S3 surface logged bad input as an internal error: %v", r)
			}
		}
	}

	tally.mu.Lock()
	errs := slices.Clone(tally.errors)
	nErrors := tally.nErrors
	t.Logf("answers by surface: %v", tally.classes)
	tally.mu.Unlock()
	for _, e := range errs {
		t.Error(e)
	}
	if nErrors > len(errs) {
		t.Errorf("... and %d more unexpected answers", nErrors-len(errs))
	}
}

// badInputPlan asks central (with the token) for a plan of crates and
// returns its candidates' keys.
func badInputPlan(central *replica, crates ...string) (int, []string) {
	req, err := http.NewRequest(http.MethodPost, central.addr+"/v2/prefetch-plan", strings.NewReader(intentJSON(crates...)))
	if err != nil {
		return 0, nil
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+badInputToken)
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var p struct {
		Candidates []struct {
			CacheKey string `json:"cache_key"`
		} `json:"candidates"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&p) != nil {
		return resp.StatusCode, nil
	}
	var keys []string
	for _, c := range p.Candidates {
		keys = append(keys, c.CacheKey)
	}
	return 200, keys
}

func intentJSON(crates ...string) string {
	b, _ := json.Marshal(map[string]any{"crate_names": crates, "namespace": nil, "cargo_lock_deps": []any{}})
	return string(b)
}

// brokenPack is a correctly signed upload of a pack that is not a usable
// kache pack.
type brokenPack struct {
	name, crate, cacheKey, key string
	body                       []byte
	// claims are the crates its meta.json names, if other than crate.
	claims []string
	// restoreFails: kache's restore must refuse it.
	restoreFails bool
}

// brokenPacks: a real pack cut after its meta.json, cut inside it, cut in
// the zstd frame header; zstd of a tar whose meta.json is garbage; a tar
// whose meta.json names another entry; zstd of random bytes; a pack with
// bytes after its frame.
func brokenPacks(t *testing.T) []brokenPack {
	var out []brokenPack
	add := func(name string, e kacheEntry, body []byte, claims ...string) {
		out = append(out, brokenPack{name: name, crate: e.crate, cacheKey: e.key, key: e.packKey(), body: body, claims: claims, restoreFails: true})
	}
	// Large enough that the cut comes blocks after meta.json's.
	e := newKacheEntry(t, "bi_truncated", 11, 2<<20)
	add("truncated after meta.json", e, e.pack[:len(e.pack)*3/4])
	e = newKacheEntry(t, "bi_truncated_meta", 12, 32<<10)
	add("truncated in meta.json", e, e.pack[:40])
	e = newKacheEntry(t, "bi_truncated_header", 13, 32<<10)
	add("truncated in the frame header", e, e.pack[:3])
	e = newKacheEntry(t, "bi_trailing", 14, 32<<10)
	add("bytes after the frame", e, append(bytes.Clone(e.pack), randomBytes(4096, 14)...))
	out[len(out)-1].restoreFails = false // a tar reader stops before them
	e = newKacheEntry(t, "bi_garbage_meta", 15, 32<<10)
	add("garbage meta.json", e, tarZstd(t, map[string][]byte{"meta.json": randomBytes(700, 15)}))
	e = newKacheEntry(t, "bi_mistyped_meta", 16, 32<<10)
	add("mistyped meta.json", e, tarZstd(t, map[string][]byte{"meta.json": fmt.Appendf(nil,
		`{"cache_key":%q,"crate_name":"bi_mistyped_meta","compile_time_ms":"slow","files":{"a":1}}`, e.key)}))
	e = newKacheEntry(t, "bi_foreign_meta", 17, 32<<10)
	other := newKacheEntry(t, "bi_claimed", 18, 1024)
	meta, _ := json.Marshal(entryMeta{CacheKey: other.key, CrateName: other.crate, Target: "x86_64-unknown-linux-gnu", Profile: "debug", CompileTimeMs: 999})
	add("meta.json naming another entry", e, tarZstd(t, map[string][]byte{"meta.json": meta}), other.crate)
	e = newKacheEntry(t, "bi_random", 19, 1024)
	add("random bytes", e, randomBytes(64<<10, 19))
	return out
}

// tarZstd is a single zstd frame around a tar of files, meta.json first.
func tarZstd(t *testing.T, files map[string][]byte) []byte {
	var out bytes.Buffer
	zw, err := zstd.NewWriter(&out, zstd.WithEncoderConcurrency(1))
	must(t, err)
	tw := tar.NewWriter(zw)
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range files {
			if !yield(n) {
				return
			}
		}
	})
	slices.SortStableFunc(names, func(a, b string) int {
		return boolInt(b == "meta.json") - boolInt(a == "meta.json")
	})
	for _, n := range names {
		must(t, tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}))
		_, err := tw.Write(files[n])
		must(t, err)
	}
	must(t, tw.Close())
	must(t, zw.Close())
	return out.Bytes()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

type namedBody struct {
	name string
	body []byte
}

// malformedManifests are build manifests central must refuse whole: not
// JSON, cut short, mistyped, numbers past uint64, nested past any decoder's
// depth, and entries that all name invalid keys or crates. The valid-looking
// entries name crate bi_manifest, which central must never plan. (Invalid
// UTF-8 inside a JSON string is not here: Go's decoders replace it with
// U+FFFD, so what is stored is well-formed; that leniency is accepted.)
func malformedManifests() []namedBody {
	key := strings.Repeat("ab", 32)
	good := fmt.Sprintf(`{"version":3,"created":"2026-01-01T00:00:00Z","manifest_key":"bad-input","entries":[{"cache_key":%q,"crate_name":"bi_manifest","compile_time_ms":5000,"artifact_size":1048576}]}`, key)
	deep := strings.Repeat(`{"a":`, 100_000) + "1" + strings.Repeat("}", 100_000)
	return []namedBody{
		{"not-json", []byte("this is not a manifest\x00\xff")},
		{"empty", nil},
		{"truncated", []byte(good[:len(good)/2])},
		{"truncated-end", []byte(good[:len(good)-1])},
		{"entries-object", []byte(`{"version":3,"manifest_key":"bad-input","entries":{"cache_key":"` + key + `","crate_name":"bi_manifest"}}`)},
		{"entry-mistyped", []byte(strings.Replace(good, `"compile_time_ms":5000`, `"compile_time_ms":"5000"`, 1))},
		{"huge-number", []byte(strings.Replace(good, `"artifact_size":1048576`, `"artifact_size":123456789012345678901234567890`, 1))},
		{"negative-number", []byte(strings.Replace(good, `"compile_time_ms":5000`, `"compile_time_ms":-5`, 1))},
		{"float-exponent", []byte(strings.Replace(good, `"compile_time_ms":5000`, `"compile_time_ms":1e400`, 1))},
		{"deep-nesting", []byte(strings.Replace(good, `"version":3`, `"version":3,"x":`+deep, 1))},
		{"deep-arrays", []byte(`{"entries":` + strings.Repeat("[", 200_000) + strings.Repeat("]", 200_000) + `}`)},
		{"bad-key", []byte(strings.Replace(good, key, strings.ToUpper(key), 1))},
		{"traversal-crate", []byte(strings.Replace(good, `"crate_name":"bi_manifest"`, `"crate_name":"../../`+badInputMarker+`"`, 1))},
		{"nul-crate", []byte(strings.Replace(good, `"crate_name":"bi_manifest"`, `"crate_name":"bi_manifest\u0000"`, 1))},
		{"entries-null-item", []byte(`{"version":3,"manifest_key":"bad-input","entries":[null,"x",5]}`)},
		{"top-level-array", []byte(`[` + good + `]`)},
		{"bom-utf16", append([]byte{0xff, 0xfe}, []byte(good)...)},
	}
}

// badLock is a Cargo.lock warm must refuse.
type badLock struct {
	name  string
	write func(t *testing.T, path string)
}

func badLockFiles() []badLock {
	content := func(s string) func(*testing.T, string) {
		return func(t *testing.T, p string) { must(t, os.WriteFile(p, []byte(s), 0o644)) }
	}
	good := kacheLock()
	return []badLock{
		{"not TOML", content("this is { not toml ]]\n\x00\xff")},
		{"binary garbage", func(t *testing.T, p string) { must(t, os.WriteFile(p, randomBytes(8192, 99), 0o644)) }},
		{"truncated", content(good[:len(good)/2+3])},
		{"package without a name", content("version = 3\n\n[[package]]\nversion = \"1.0.0\"\n")},
		{"package without a version", content("version = 3\n\n[[package]]\nname = \"serde\"\n")},
		{"version of the wrong type", content("version = \"three\"\n\n[[package]]\nname = \"serde\"\nversion = \"1.0.0\"\n")},
		{"negative lock version", content("version = -1\n\n[[package]]\nname = \"serde\"\nversion = \"1.0.0\"\n")},
		{"huge lock version", content("version = 99999999999999999999999\n")},
		{"package is a string", content("version = 3\npackage = \"serde\"\n")},
		{"dependencies of the wrong type", content("version = 3\n\n[[package]]\nname = \"serde\"\nversion = \"1.0.0\"\ndependencies = 5\n")},
		{"dependency not a string", content("version = 3\n\n[[package]]\nname = \"serde\"\nversion = \"1.0.0\"\ndependencies = [1, 2]\n")},
		{"deeply nested arrays", content("version = 3\nx = " + strings.Repeat("[", 500_000) + strings.Repeat("]", 500_000) + "\n")},
		{"over 64 MiB", func(t *testing.T, p string) {
			f, err := os.Create(p)
			must(t, err)
			must(t, f.Truncate(65<<20)) // sparse: zeros
			must(t, f.Close())
		}},
		{"a directory", func(t *testing.T, p string) { must(t, os.Mkdir(p, 0o755)) }},
		{"missing", func(*testing.T, string) {}},
		{"a dangling symlink", func(t *testing.T, p string) { must(t, os.Symlink(filepath.Join(p+".d", badInputMarker), p)) }},
	}
}

// fuzzer generates the requests of the fuzz loop.
type fuzzer struct {
	mu                               sync.Mutex
	rng                              *rand.Rand
	k, wrongK, unknownK              *kacheS3
	s3Host, centralHost, plannerHost string
}

func (f *fuzzer) pick(items ...string) string { return items[f.rng.IntN(len(items))] }
func (f *fuzzer) chance(p float64) bool       { return f.rng.Float64() < p }

// mutatePath bends a path: traversal, encoded dots and slashes, NUL, very
// long segments, unicode, invalid UTF-8 and percent escapes, queries.
func (f *fuzzer) mutatePath(p string) string {
	switch f.rng.IntN(14) {
	case 0:
		return p
	case 1:
		return p + "/../../../../../../" + badInputMarker
	case 2:
		return "/%2e%2e/%2e%2e/%2e%2e/" + badInputMarker + p
	case 3:
		return p + "%00" + badInputMarker
	case 4:
		return p + "/" + strings.Repeat("k", 1000+f.rng.IntN(9000))
	case 5:
		return p + "/ünïcødé/日本語/" + badInputMarker
	case 6:
		return p + "/%ff%fe%c0%af" + badInputMarker
	case 7:
		return p + "%zz%"
	case 8:
		return strings.ReplaceAll(p, "/", "//")
	case 9:
		return p + "?" + f.pick("x=1", "a=%00", "partNumber=-1", "uploads", "uploadId=../"+badInputMarker, "list-type=2&max-keys=-5",
			"continuation-token=%ff%ff", "delete", strings.Repeat("q=1&", 2000), "X-Amz-Expires=99999999999")
	case 10:
		return strings.ToUpper(p)
	case 11:
		return p + "/..%2F..%2F..%2F" + badInputMarker
	case 12:
		return "http://evil.example" + p
	default:
		return p + "\\..\\..\\" + badInputMarker
	}
}

// body is a request body for a JSON route: valid, truncated, mistyped,
// huge numbers, deep nesting, random bytes, empty, other encodings.
func (f *fuzzer) body() ([]byte, bool) {
	valid := intentJSON("bi_fuzz", "serde")
	switch f.rng.IntN(16) {
	case 0:
		return []byte(valid), false
	case 1:
		return []byte(valid[:f.rng.IntN(len(valid))]), true
	case 2:
		return []byte(`{"crate_names":"bi_fuzz","namespace":5,"cargo_lock_deps":{}}`), true
	case 3:
		return []byte(`{"crate_names":["bi_fuzz"],"namespace":null,"cargo_lock_deps":[{"name":1e999,"version":123456789012345678901234567890}]}`), true
	case 4:
		n := 1000 + f.rng.IntN(200_000)
		return []byte(`{"crate_names":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`), true
	case 5:
		n := 1000 + f.rng.IntN(100_000)
		return []byte(strings.Repeat(`{"a":`, n) + "null" + strings.Repeat("}", n)), true
	case 6:
		return randomBytes(1+f.rng.IntN(4096), f.rng.Uint64()), true
	case 7:
		return nil, true
	case 8:
		return []byte(`{"crate_names":["` + strings.Repeat("x", 300_000) + `"],"namespace":null,"cargo_lock_deps":[]}`), false
	case 9:
		return []byte("\xef\xbb\xbf" + valid), false
	case 10:
		return []byte(`{"crate_names":["bi_fuzz\ud800","\u0000","` + "\xff\xfe" + `"],"namespace":"../../` + badInputMarker + `","cargo_lock_deps":[]}`), false
	case 11:
		return []byte(`{"keys":[{"cache_key":"` + strings.Repeat("z", 64) + `","crate_name":"../` + badInputMarker + `"}]}`), false
	case 12:
		return []byte(`{"crate_names":[` + strings.Repeat(`"bi_fuzz",`, 50_000) + `"x"],"namespace":null,"cargo_lock_deps":[]}`), false
	case 13:
		return []byte(`{"crate_names":["bi_fuzz"],"crate_names":[1],"namespace":null}`), true
	case 14:
		return []byte(`NaN`), true
	default:
		b := []byte(valid)
		for range 1 + f.rng.IntN(6) {
			b[f.rng.IntN(len(b))] = byte(f.rng.IntN(256))
		}
		return b, false
	}
}

// headers adds random hostile headers and chooses the body's framing.
func (f *fuzzer) frame(r *fuzzReq) {
	for range f.rng.IntN(4) {
		switch f.rng.IntN(10) {
		case 0:
			r.header = append(r.header, [2]string{"Content-Type", f.pick("application/json", "text/plain", "application/json; charset=utf-16", "multipart/form-data; boundary=x", "\x01\x02")})
		case 1:
			r.header = append(r.header, [2]string{"Content-Encoding", f.pick("zstd", "gzip", "br", "aws-chunked", "identity, zstd", "x")})
		case 2:
			r.header = append(r.header, [2]string{"X-Pad", strings.Repeat("p", 100+f.rng.IntN(24<<10))})
		case 3:
			for i := range 50 + f.rng.IntN(300) {
				r.header = append(r.header, [2]string{fmt.Sprintf("X-Many-%d", i), "v"})
			}
		case 4:
			r.header = append(r.header, [2]string{"Expect", "100-continue"})
		case 5:
			r.header = append(r.header, [2]string{"X-Unicode", "ünï\xff\xfe"})
		case 6:
			r.header = append(r.header, [2]string{"Range", f.pick("bytes=0-", "bytes=-0", "bytes=99999999999999999999-", "bytes=5-1", "bytes=0-1,2-3", "x")})
		case 7:
			r.header = append(r.header, [2]string{"If-None-Match", f.pick("*", `"x"`, strings.Repeat(",", 1000))})
		case 8:
			r.header = append(r.header, [2]string{"Content-MD5", f.pick("xx", "", base64.StdEncoding.EncodeToString(make([]byte, 16)))})
		default:
			r.header = append(r.header, [2]string{"X-Amz-Decoded-Content-Length", f.pick("-1", "99999999999999999999", "abc", "0")})
		}
	}
	switch f.rng.IntN(12) {
	case 0: // declared longer than sent
		r.length = len(r.body) + 1 + f.rng.IntN(1<<20)
		r.dropOK = true
	case 1: // a huge declared length, nothing sent beyond the body
		r.rawLength = f.pick("1099511627776", "9223372036854775807", "99999999999999999999999")
		r.dropOK = true
	case 2:
		r.rawLength = f.pick("-1", "abc", "1, 2", " 5", "0x10", "")
		r.dropOK = true
	case 3: // shorter than sent: the rest is a second, garbage request
		if len(r.body) > 0 {
			r.length = f.rng.IntN(len(r.body))
		}
	case 4: // chunked, correct or not
		r.length = -2
		r.header = append(r.header, [2]string{"Transfer-Encoding", "chunked"})
		var b bytes.Buffer
		if len(r.body) > 0 {
			fmt.Fprintf(&b, "%x\r\n", len(r.body))
			b.Write(r.body)
			b.WriteString("\r\n")
		}
		switch f.rng.IntN(3) {
		case 0:
			b.WriteString("0\r\n\r\n")
		case 1:
			b.WriteString("zz\r\nxx\r\n")
			r.dropOK = true
		default:
			r.dropOK = true // no final chunk
		}
		r.body = b.Bytes()
	case 5: // both framings
		r.header = append(r.header, [2]string{"Transfer-Encoding", "chunked"})
		r.dropOK = true
	default:
		r.length = -1
	}
}

func (f *fuzzer) method() string {
	return f.pick("GET", "POST", "POST", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "TRACE", "CONNECT", "FOO", "get", strings.Repeat("M", 300))
}

// central is a request to central: guarded routes with no, wrong or right
// tokens; a right token only ever carries a body that cannot be a valid
// manifest or timeline (plans and missing-key reports change nothing
// central plans from).
func (f *fuzzer) central() *fuzzReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	route := f.pick("/v1/prefetch-plan", "/v2/prefetch-plan", "/v1/manifests", "/v1/missing-keys", "/v1/build-timelines", "/healthz", "/readyz", "/metrics", "/", "/v3/prefetch-plan")
	r := &fuzzReq{surface: "central", method: f.method(), target: f.mutatePath(route)}
	body, invalid := f.body()
	r.body = body
	guarded := route != "/healthz" && route != "/readyz" && route != "/metrics"
	switch f.rng.IntN(6) {
	case 0:
		r.what = "no token"
		r.mustFail = guarded
	case 1:
		r.what = "wrong token"
		r.header = append(r.header, [2]string{"Authorization", f.pick("Bearer wrong", "Bearer "+badInputToken+"0", "Basic Zm9vOmJhcg==", "Bearer", "Bearer "+strings.Repeat("t", 8192), "\x00")})
		r.mustFail = guarded
	default:
		r.what = "token"
		r.header = append(r.header, [2]string{"Authorization", "Bearer " + badInputToken})
		switch route {
		case "/v1/manifests":
			// Only bodies that cannot be a manifest.
			ms := malformedManifests()
			m := ms[f.rng.IntN(len(ms))]
			r.body, r.what, r.mustFail = m.body, "token, manifest "+m.name, true
		case "/v1/build-timelines":
			r.header = append(r.header, [2]string{"Content-Encoding", "zstd"})
			if !invalid && len(body) > 0 {
				r.body = body[:len(body)-1]
			}
			r.mustFail = true
		}
	}
	r.header = append(r.header, [2]string{"Content-Type", "application/json"})
	f.frame(r)
	return r
}

// planner is a request to the sidecar's planner surface (no token: it is
// loopback).
func (f *fuzzer) planner() *fuzzReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	route := f.pick("/v1/prefetch-plan", "/v2/prefetch-plan", "/v2/prefetch-plan", "/v1/build-timelines", "/v1/prefetch/sessions/x", "/healthz", "/metrics", "/")
	if route == "/v1/prefetch/sessions/x" {
		route = "/v1/prefetch/sessions/" + f.pick("../../"+badInputMarker, "%2e%2e%2f"+badInputMarker, strings.Repeat("p", 5000), "plan-0", "%00")
	}
	r := &fuzzReq{surface: "planner", what: "planner", method: f.method(), target: f.mutatePath(route)}
	r.body, _ = f.body()
	if route == "/v1/build-timelines" {
		// Never a valid timeline: cut zstd or none at all.
		r.header = append(r.header, [2]string{"Content-Encoding", f.pick("zstd", "gzip", "")})
		r.mustFail = true
	}
	r.header = append(r.header, [2]string{"Content-Type", "application/json"})
	f.frame(r)
	return r
}

// s3 is a request to the S3 surface: unsigned, signed with the wrong
// secret or an unknown key, signed then tampered (date, signed headers,
// signature, scope), presigned and expired, or correctly signed with an
// odd path or query, or a body that does not match what was signed. No
// correctly signed request may store anything.
func (f *fuzzer) s3() *fuzzReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := f.pick("fz/obj", layout.PackKey("artifacts", "bi_fuzz", strings.Repeat("cd", 32)),
		layout.EntryManifestKey("artifacts", "bi_fuzz", strings.Repeat("cd", 32)), layout.BuildManifestKey("artifacts", "bi-fuzz"), "fz/dir/")
	path := f.pick("/"+testBucket+"/"+escapeKey(key), "/"+testBucket, "/", "/other/"+escapeKey(key), "/"+testBucket+"/"+escapeKey(key))
	path = f.mutatePath(path)
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	method := f.method()
	body := randomBytes(f.rng.IntN(64<<10), f.rng.Uint64())
	if f.chance(0.3) {
		body, _ = f.body()
	}
	r := &fuzzReq{surface: "s3", method: method, s3: true, body: body, mustFail: true}
	// sign signs method, path, query with k; the wire request keeps the
	// signed headers.
	sign := func(k *kacheS3, payloadHash string, at time.Time, hdr http.Header) (*http.Request, error) {
		rawPath, rawQuery, _ := strings.Cut(path, "?")
		req, err := http.NewRequest(http.MethodGet, "http://"+f.s3Host, nil)
		if err != nil {
			return nil, err
		}
		req.Method = method
		req.URL.Opaque = rawPath
		req.URL.RawQuery = rawQuery
		for n, vs := range hdr {
			req.Header[n] = vs
		}
		req.Header.Set("x-amz-content-sha256", payloadHash)
		if err := k.signer.SignHTTP(context.Background(), k.creds, req, payloadHash, "s3", k.region, at); err != nil {
			return nil, err
		}
		return req, nil
	}
	readOnly := method == http.MethodGet || method == http.MethodHead
	var req *http.Request
	var err error
	switch f.rng.IntN(11) {
	case 0:
		r.what = "unsigned"
	case 1:
		r.what = "wrong secret"
		req, err = sign(f.wrongK, unsignedPayload, time.Now(), nil)
	case 2:
		r.what = "unknown access key"
		req, err = sign(f.unknownK, unsignedPayload, time.Now(), nil)
	case 3:
		r.what = "signed at a wrong date"
		req, err = sign(f.k, unsignedPayload, time.Now().Add(time.Duration(f.pick2(-1, 1))*time.Duration(20+f.rng.IntN(100000))*time.Minute), nil)
	case 4:
		r.what = "date changed after signing"
		req, err = sign(f.k, unsignedPayload, time.Now(), nil)
		if err == nil {
			req.Header.Set("X-Amz-Date", time.Now().Add(-time.Minute).UTC().Format("20060102T150405Z"))
		}
	case 5:
		r.what = "tampered signed headers"
		req, err = sign(f.k, unsignedPayload, time.Now(), http.Header{"X-Amz-Meta-A": {"1"}})
		if err == nil {
			a := req.Header.Get("Authorization")
			switch f.rng.IntN(4) {
			case 0:
				a = strings.Replace(a, "host;", "", 1)
			case 1:
				a = strings.Replace(a, "SignedHeaders=", "SignedHeaders=x-not-sent;", 1)
			case 2:
				req.Header.Set("X-Amz-Meta-A", "2")
			default:
				a = strings.Replace(a, "SignedHeaders=", "SignedHeaders=;;", 1)
			}
			req.Header.Set("Authorization", a)
		}
	case 6:
		r.what = "tampered signature or scope"
		req, err = sign(f.k, unsignedPayload, time.Now(), nil)
		if err == nil {
			a := req.Header.Get("Authorization")
			switch f.rng.IntN(6) {
			case 0:
				a = a[:len(a)-1] + string("0123456789abcdef"[f.rng.IntN(16)])
				if strings.HasSuffix(req.Header.Get("Authorization"), a[len(a)-1:]) {
					a = a[:len(a)-1] + "g"
				}
			case 1:
				a = a[:f.rng.IntN(len(a))]
			case 2:
				a = strings.Replace(a, "/s3/", "/ec2/", 1)
			case 3:
				a = strings.Replace(a, "AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512", 1)
			case 4:
				a = strings.Replace(a, "Credential=", "Credential="+strings.Repeat("/", 50), 1)
			default:
				a += ", Signature=" + strings.Repeat("0", 64)
			}
			req.Header.Set("Authorization", a)
		}
	case 7:
		r.what = "expired or tampered presign"
		rawPath, rawQuery, _ := strings.Cut(path, "?")
		preq, perr := http.NewRequest(http.MethodGet, "http://"+f.s3Host, nil)
		if perr != nil {
			err = perr
			break
		}
		preq.Method = method
		preq.URL.Opaque = rawPath
		q, _ := url.ParseQuery(rawQuery)
		q.Set("X-Amz-Expires", f.pick("1", "60", "604801", "-5", "x"))
		preq.URL.RawQuery = q.Encode()
		at := time.Now().Add(-2 * time.Hour)
		if f.chance(0.3) {
			at = time.Now()
		}
		u, _, perr := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }).PresignHTTP(context.Background(),
			aws.Credentials{AccessKeyID: localAccessKey, SecretAccessKey: localSecretKey}, preq, unsignedPayload, "s3", testenv.MinioRegion, at)
		if perr != nil {
			err = perr
			break
		}
		pu, perr := url.Parse(u)
		if perr != nil {
			err = perr
			break
		}
		pq := pu.Query()
		if at.After(time.Now().Add(-time.Minute)) {
			// Fresh: tamper with it instead.
			pq.Set(f.pick("X-Amz-Signature", "X-Amz-Date", "X-Amz-Credential", "X-Amz-SignedHeaders"), f.pick("0", "", "../"+badInputMarker))
		}
		r.target = rawPath + "?" + pq.Encode()
		r.what += " (X-Amz-Expires " + q.Get("X-Amz-Expires") + ")"
	case 8:
		r.what = "signed, body does not match its signed hash"
		if method != http.MethodPut && method != http.MethodPost {
			method = http.MethodPut
			r.method = method
		}
		req, err = sign(f.k, sha256Hex(append(bytes.Clone(body), 'x')), time.Now(), nil)
	case 9:
		r.what = "signed, wrong Content-MD5"
		if method != http.MethodPut {
			method = http.MethodPut
			r.method = method
		}
		sum := md5.Sum(append(bytes.Clone(body), 'x'))
		req, err = sign(f.k, unsignedPayload, time.Now(), http.Header{"Content-Md5": {base64.StdEncoding.EncodeToString(sum[:])}})
	default:
		if !readOnly {
			method = f.pick(http.MethodGet, http.MethodHead)
			r.method = method
		}
		r.what = "correctly signed read"
		r.mustFail = false
		r.body = nil
		if f.chance(0.3) {
			path = "/" + testBucket + "?" + f.pick("list-type=2&max-keys=-1", "list-type=2&continuation-token=%ff", "list-type=2&prefix=%00",
				"location", "list-type=2&start-after="+strings.Repeat("z", 2000), "acl", "versions", "list-type=3", "max-keys=abc", "delimiter=%00")
		}
		req, err = sign(f.k, unsignedPayload, time.Now(), nil)
	}
	if err != nil {
		// The signer refused the request (e.g. an unparseable path):
		// send it unsigned.
		req = nil
		r.what += " (unsigned: " + err.Error() + ")"
	}
	if r.target == "" {
		r.target = path
	}
	if req != nil {
		for n, vs := range req.Header {
			for _, v := range vs {
				r.header = append(r.header, [2]string{n, v})
			}
		}
	}
	if r.method == http.MethodGet || r.method == http.MethodHead {
		if r.mustFail || f.chance(0.8) {
			r.body = nil
		}
	}
	// Signed headers are sent as signed; framing is fuzzed only for
	// uploads, whose body is not part of the signature.
	if req == nil || !r.mustFail {
		r.length = -1
		if r.body == nil {
			r.length = -2
			if r.method == http.MethodPut || r.method == http.MethodPost {
				r.length = 0
			}
		}
	} else {
		f.frame(r)
	}
	return r
}

func (f *fuzzer) pick2(a, b int) int {
	if f.rng.IntN(2) == 0 {
		return a
	}
	return b
}

// metricFamilySum adds up every series of a counter family.
func metricFamilySum(t *testing.T, base, family string) float64 {
	t.Helper()
	resp, err := httpc.Get(base + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	var sum float64
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		name, value, ok := strings.Cut(s.Text(), " ")
		if !ok || (name != family && !strings.HasPrefix(name, family+"{")) {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			sum += v
		}
	}
	must(t, s.Err())
	return sum
}

// treeSnapshot lists every path under root outside the allowed
// directories, directories marked with a trailing slash.
func treeSnapshot(t *testing.T, root string, allowed []string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if slices.Contains(allowed, p) {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			rel += "/"
		}
		out = append(out, rel)
		return nil
	})
	must(t, err)
	slices.Sort(out)
	return out
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	must(t, err)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return out
}

// setMinus is a's elements not in b.
func setMinus(a, b []string) []string {
	in := map[string]bool{}
	for _, s := range b {
		in[s] = true
	}
	var out []string
	for _, s := range a {
		if !in[s] {
			out = append(out, s)
		}
	}
	return out
}

// hasCrashText reports a panic, a goroutine dump, a fatal runtime error or
// a data race in a process's output.
func hasCrashText(s string) bool {
	for _, m := range []string{"panic", "goroutine ", "fatal error", "DATA RACE"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// crashContext is the log around its first crash text.
func crashContext(s string) string {
	i := len(s)
	for _, m := range []string{"panic", "goroutine ", "fatal error", "DATA RACE"} {
		if j := strings.Index(s, m); j >= 0 && j < i {
			i = j
		}
	}
	return s[max(0, i-500):]
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
