//! Container volumes (Agola's container `volumes`: a tmpfs at a path, with an optional
//! size): the mounts the docker driver asks the Engine for, and the one-line notice of the
//! local driver, which has no containers to mount them in. Pure: no Engine, no I/O.

use bollard::models::{Mount, MountTmpfsOptions, MountType};
use cairn_client::runconfig::{Container, Volume};

use super::DriverError;

/// The Engine mounts of `container`'s volumes (`None` when it has none): one tmpfs per
/// volume at its path, limited to its size when it has one (Agola's docker driver did
/// the same). A volume that is not a tmpfs, a relative path or a size past `i64` is
/// refused.
pub fn docker_mounts(container: &Container) -> Result<Option<Vec<Mount>>, DriverError> {
    if container.volumes.is_empty() {
        return Ok(None);
    }
    container
        .volumes
        .iter()
        .map(|volume| tmpfs_mount(&container.image, volume))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn tmpfs_mount(image: &str, volume: &Volume) -> Result<Mount, DriverError> {
    let refuse = |why: &str| {
        DriverError::Refused(format!(
            "volume {:?} of container {image}: {why}",
            volume.path
        ))
    };
    let Some(tmpfs) = &volume.tmpfs else {
        return Err(refuse("only tmpfs volumes are supported"));
    };
    if !volume.path.starts_with('/') {
        return Err(refuse("the path must be absolute"));
    }
    let size_bytes = tmpfs
        .size_bytes
        .map(|size| i64::try_from(size).map_err(|_| refuse("the size is too big")))
        .transpose()?;
    Ok(Mount {
        target: Some(volume.path.clone()),
        typ: Some(MountType::TMPFS),
        tmpfs_options: Some(MountTmpfsOptions {
            size_bytes,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// What the local driver says, once per task, when the task's containers ask for volumes
/// it cannot mount (`None` when they ask for none).
pub fn local_notice(containers: &[Container]) -> Option<String> {
    let volumes: Vec<String> = containers
        .iter()
        .flat_map(|c| &c.volumes)
        .map(|v| match v.tmpfs.as_ref().and_then(|t| t.size_bytes) {
            Some(size) => format!("{} (tmpfs, {size} bytes)", v.path),
            None => format!("{} (tmpfs)", v.path),
        })
        .collect();
    if volumes.is_empty() {
        return None;
    }
    Some(format!(
        "local driver: volumes are ignored, steps use the host's file system: {}\n",
        volumes.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_client::runconfig::TmpfsVolume;

    fn with_volumes(volumes: Vec<Volume>) -> Container {
        Container {
            image: "busybox".into(),
            volumes,
            ..Default::default()
        }
    }

    fn tmpfs(path: &str, size_bytes: Option<u64>) -> Volume {
        Volume {
            path: path.into(),
            tmpfs: Some(TmpfsVolume { size_bytes }),
        }
    }

    #[test]
    fn no_volumes_no_mounts() {
        assert_eq!(docker_mounts(&with_volumes(vec![])).expect("ok"), None);
        assert_eq!(local_notice(&[with_volumes(vec![])]), None);
    }

    #[test]
    fn each_tmpfs_volume_is_a_tmpfs_mount_with_its_size() {
        let c = with_volumes(vec![tmpfs("/scratch", Some(8 << 20)), tmpfs("/tmp", None)]);
        let mounts = docker_mounts(&c).expect("ok").expect("mounts");
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].target.as_deref(), Some("/scratch"));
        assert_eq!(mounts[0].typ, Some(MountType::TMPFS));
        assert_eq!(
            mounts[0].tmpfs_options.as_ref().and_then(|o| o.size_bytes),
            Some(8 << 20)
        );
        assert_eq!(mounts[0].source, None);
        assert_eq!(
            mounts[1].tmpfs_options.as_ref().and_then(|o| o.size_bytes),
            None
        );
    }

    #[test]
    fn other_volumes_relative_paths_and_huge_sizes_are_refused() {
        for (volume, why) in [
            (
                Volume {
                    path: "/data".into(),
                    tmpfs: None,
                },
                "only tmpfs",
            ),
            (tmpfs("data", None), "absolute"),
            (tmpfs("/data", Some(u64::MAX)), "too big"),
        ] {
            let err = docker_mounts(&with_volumes(vec![volume])).expect_err(why);
            assert!(
                matches!(&err, DriverError::Refused(m) if m.contains(why)),
                "{err}"
            );
        }
    }

    #[test]
    fn the_local_driver_names_the_volumes_it_ignores() {
        let notice = local_notice(&[
            with_volumes(vec![tmpfs("/scratch", Some(1024))]),
            with_volumes(vec![tmpfs("/cache", None)]),
        ])
        .expect("a notice");
        assert_eq!(
            notice,
            "local driver: volumes are ignored, steps use the host's file system: \
             /scratch (tmpfs, 1024 bytes), /cache (tmpfs)\n"
        );
    }
}
