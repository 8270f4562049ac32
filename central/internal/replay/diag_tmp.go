package replay

import (
	"fmt"
	"os"
	"sort"
)

var diag = map[string]uint64{}

func diagnose(p string, b *Build, downloads []Download) {
	if os.Getenv("REPLAY_DIAG") != p {
		return
	}
	byCrate := map[string][]*Unit{}
	byKey := map[string]*Unit{}
	for i := range b.Units {
		u := &b.Units[i]
		byCrate[u.Crate] = append(byCrate[u.Crate], u)
		byKey[u.Key] = u
	}
	got := map[string]bool{}
	for _, d := range downloads {
		got[d.Key] = true
	}
	scope := "main"
	if b.First {
		scope = "first"
	} else if !b.First && b.Commit >= 0 && !bfp[b.Commit] {
		scope = "branch"
	}
	for _, d := range downloads {
		if !d.Exists {
			diag[scope+" 404"]++
			continue
		}
		if _, ok := byKey[d.Key]; ok {
			continue
		}
		us := byCrate[d.Crate]
		cat := "crate not in build"
		if len(us) > 0 {
			member := us[0].Pkg >= 0 && b.Lock.Packages[us[0].Pkg].Source == ""
			anyAvail, allGot := false, true
			for _, u := range us {
				if u.Available {
					anyAvail = true
					if !got[u.Key] {
						allGot = false
					}
				}
			}
			switch {
			case !anyAvail:
				cat = "stale: needed key not available"
			case allGot:
				cat = "extra variant (right one fetched too)"
			default:
				cat = "wrong variant (right one missed)"
			}
			if member {
				cat += " [member]"
			}
		}
		diag[scope+" "+cat] += d.Size
	}
	crateGot := map[string]bool{}
	for _, d := range downloads {
		crateGot[d.Crate] = true
	}
	for i := range b.Units {
		u := &b.Units[i]
		if u.Available && !got[u.Key] {
			cat := " MISSED no key of crate fetched"
			if crateGot[u.Crate] {
				cat = " MISSED other key of crate fetched"
			}
			if len(byCrate[u.Crate]) > 1 {
				cat += " (multi-version)"
			}
			if b.Lock.Packages[u.Pkg].Source == "" {
				cat += " [member]"
			}
			diag[scope+cat] += u.SizeBytes
		}
	}
}

var bfp = map[int]bool{}

func printDiag() {
	if os.Getenv("REPLAY_DIAG") == "" {
		return
	}
	var ks []string
	for k := range diag {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	for _, k := range ks {
		fmt.Fprintf(os.Stderr, "%-60s %10.2f GiB\n", k, float64(diag[k])/(1<<30))
	}
}

func toolchainDiag(t, lag int64) string {
	if os.Getenv("REPLAY_FIXED_TC") != "" {
		return "fixed"
	}
	return Toolchain(t, lag)
}
