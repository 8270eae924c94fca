<?php
/**
 * 1.0.0 → 1.1.0: events that failed for good are kept (`failed`, `last_status`) instead of
 * being deleted, so the configuration page can count them.
 */
if (!defined('_PS_VERSION_')) {
    exit;
}

function upgrade_module_1_1_0($module)
{
    $table = '`' . _DB_PREFIX_ . JobgateOutbox::TABLE . '`';
    $db = Db::getInstance();
    return $db->execute('ALTER TABLE ' . $table . ' ADD COLUMN `failed` TINYINT(1) NOT NULL DEFAULT 0')
        && $db->execute('ALTER TABLE ' . $table . ' ADD COLUMN `last_status` INT NOT NULL DEFAULT 0');
}
