//! The in-kernel test framework. Tests that need the real machine (page
//! tables, exceptions, per-CPU data, the platform) run inside the booted
//! kernel: each registers itself with [`kernel_test!`](crate::kernel_test)
//! in the `.kernel_tests` section, and a test build of the kernel runs them
//! all at boot, prints one line per test and a closing
//! `N passed, N failed, N skipped` line, and exits through the exit device
//! with success only if none failed. A test that does not apply to the
//! platform it booted on says so with [`skip!`](crate::skip): it is counted
//! as skipped, never as passed, so the xtask can tell a platform's tests
//! from tests that did not run.

use alloc::string::String;

/// A registered test.
#[repr(C)]
pub struct KernelTest {
    /// The test's name (module path and function name).
    pub name: &'static str,
    /// The test.
    pub run: fn() -> TestResult,
}

/// What a test returns: `Ok` when it passed.
pub type TestResult = Result<(), NotPassed>;

/// Why a test did not pass.
#[derive(Debug)]
pub enum NotPassed {
    /// A check failed.
    Failed(TestFailure),
    /// The test does not apply here (the reason says why).
    Skipped(&'static str),
}

/// Why a test failed.
#[derive(Debug)]
pub struct TestFailure {
    /// Source file of the failed check.
    pub file: &'static str,
    /// Line of the failed check.
    pub line: u32,
    /// What was expected.
    pub message: String,
}

/// Registers a test that runs in the booted kernel.
///
/// ```text
/// kernel_test! {
///     fn frames_are_page_aligned() {
///         let frame = FRAMES.lock().allocate().unwrap();
///         check!(frame % 4096 == 0);
///     }
/// }
/// ```
#[macro_export]
macro_rules! kernel_test {
    (fn $name:ident() $body:block) => {
        fn $name() -> $crate::testing::TestResult {
            $body
            #[allow(unreachable_code)]
            Ok(())
        }
        const _: () = {
            #[used]
            #[unsafe(link_section = ".kernel_tests")]
            static TEST: $crate::testing::KernelTest = $crate::testing::KernelTest {
                name: concat!(module_path!(), "::", stringify!($name)),
                run: $name,
            };
        };
    };
}

/// Fails the test unless the condition holds.
#[macro_export]
macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            return Err($crate::testing::NotPassed::Failed($crate::testing::TestFailure {
                file: file!(),
                line: line!(),
                message: alloc::format!("check failed: {}", stringify!($cond)),
            }));
        }
    };
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::testing::NotPassed::Failed($crate::testing::TestFailure {
                file: file!(),
                line: line!(),
                message: alloc::format!($($arg)+),
            }));
        }
    };
}

/// Fails the test unless both values are equal.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr) => {
        match (&$left, &$right) {
            (left, right) => {
                if left != right {
                    return Err($crate::testing::NotPassed::Failed($crate::testing::TestFailure {
                        file: file!(),
                        line: line!(),
                        message: alloc::format!(
                            "{} == {}: {:?} != {:?}",
                            stringify!($left),
                            stringify!($right),
                            left,
                            right
                        ),
                    }));
                }
            }
        }
    };
}

/// Ends the test as skipped: it does not apply to this platform.
#[macro_export]
macro_rules! skip {
    ($reason:literal) => {
        return Err($crate::testing::NotPassed::Skipped($reason))
    };
}

/// Totals of a test run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed.
    pub failed: usize,
    /// Tests that did not apply to the platform.
    pub skipped: usize,
}

/// Runs `tests` in order, printing a line for each through `print` and the
/// closing totals line.
pub fn run_tests(tests: &[KernelTest], mut print: impl FnMut(core::fmt::Arguments<'_>)) -> Summary {
    let mut summary = Summary::default();
    print(format_args!("running {} kernel tests\n", tests.len()));
    for test in tests {
        match (test.run)() {
            Ok(()) => {
                summary.passed += 1;
                print(format_args!("test {} ... ok\n", test.name));
            }
            Err(NotPassed::Skipped(reason)) => {
                summary.skipped += 1;
                print(format_args!("test {} ... skipped: {reason}\n", test.name));
            }
            Err(NotPassed::Failed(failure)) => {
                summary.failed += 1;
                print(format_args!(
                    "test {} ... FAILED at {}:{}: {}\n",
                    test.name, failure.file, failure.line, failure.message
                ));
            }
        }
    }
    print(format_args!(
        "{} passed, {} failed, {} skipped\n",
        summary.passed, summary.failed, summary.skipped
    ));
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passes() -> TestResult {
        Ok(())
    }

    fn fails() -> TestResult {
        check_eq!(1 + 1, 3);
        Ok(())
    }

    fn does_not_apply() -> TestResult {
        skip!("not this platform");
    }

    #[test]
    fn runner_counts_and_reports_each_test() {
        let tests = [
            KernelTest { name: "a::passes", run: passes },
            KernelTest { name: "a::fails", run: fails },
            KernelTest { name: "a::does_not_apply", run: does_not_apply },
        ];
        let mut output = String::new();
        let summary = run_tests(&tests, |args| output.push_str(&alloc::format!("{args}")));
        assert_eq!(summary, Summary { passed: 1, failed: 1, skipped: 1 });
        assert!(output.contains("test a::passes ... ok\n"));
        assert!(output.contains("test a::fails ... FAILED at kernel/src/testing.rs"));
        assert!(output.contains("1 + 1 == 3: 2 != 3"));
        assert!(output.contains("test a::does_not_apply ... skipped: not this platform\n"));
        assert!(output.ends_with("1 passed, 1 failed, 1 skipped\n"));
    }
}
